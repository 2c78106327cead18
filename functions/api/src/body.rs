//! Request bodies: size limit (413), content type (415), JSON syntax (400) and shape (422),
//! each with the one error shape and, for shape errors, the JSON path of the field at fault.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use flowgate_shared::api::MAX_BODY_BYTES;

/// A JSON body. An empty body reads as `{}`, so commands whose fields are all optional
/// (`cancel`, `retry`) can be sent without one; required fields still fail with 422.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (headers, bytes) = read(req, state).await?;
        if bytes.is_empty() {
            return parse_json(b"{}").map(JsonBody);
        }
        match media_type(&headers).as_deref() {
            Some("application/json") => {}
            Some(other) => return Err(unsupported(other, "application/json")),
            None => return Err(unsupported("(none)", "application/json")),
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// A workflow definition document: JSON (`application/json`) or YAML (`application/yaml`,
/// `application/x-yaml`, `text/yaml`), kept as text for the definition parser.
#[derive(Debug)]
pub struct DefinitionBody(pub String);

impl<S: Send + Sync> FromRequest<S> for DefinitionBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        const ACCEPTED: &str = "application/json or application/yaml";
        let (headers, bytes) = read(req, state).await?;
        match media_type(&headers).as_deref() {
            Some("application/json" | "application/yaml" | "application/x-yaml" | "text/yaml") => {}
            Some(other) => return Err(unsupported(other, ACCEPTED)),
            None => return Err(unsupported("(none)", ACCEPTED)),
        }
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "empty_body",
                "the request body is empty; send a workflow definition",
            ));
        }
        let text = String::from_utf8(bytes.to_vec()).map_err(|e| {
            ApiError::bad_request(
                "invalid_utf8",
                format!(
                    "the body is not valid UTF-8 (byte {}); send UTF-8 text",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
        Ok(DefinitionBody(text))
    }
}

/// The exact bytes of a body and the request's headers, for handlers that verify a signature
/// over the raw body before parsing it (Slack, Standard Webhooks). Size limit as for JSON.
#[derive(Debug)]
pub struct RawBody {
    pub headers: HeaderMap,
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (headers, bytes) = read(req, state).await?;
        Ok(RawBody { headers, bytes })
    }
}

impl RawBody {
    /// The body as JSON, with [`JsonBody`]'s rules (empty reads as `{}`, 415, 400, 422).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.bytes.is_empty() {
            return parse_json(b"{}");
        }
        match media_type(&self.headers).as_deref() {
            Some("application/json") => {}
            Some(other) => return Err(unsupported(other, "application/json")),
            None => return Err(unsupported("(none)", "application/json")),
        }
        parse_json(&self.bytes)
    }

    /// The media type without parameters, lower-cased.
    pub fn media_type(&self) -> Option<String> {
        media_type(&self.headers)
    }

    /// Every header as a (name, value) pair, for the signature verifiers (values that are not
    /// text are skipped, so a verifier sees them as missing).
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect()
    }
}

async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<(HeaderMap, Bytes), ApiError> {
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::bad_request(
                "unreadable_body",
                format!("the request body could not be read: {rejection}"),
            )
        }
    })?;
    Ok((headers, bytes))
}

/// The media type without parameters, lower-cased (`application/json; charset=utf-8` →
/// `application/json`).
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

fn unsupported(got: &str, expected: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("content type {got} is not accepted here; send {expected}"),
    )
}

/// Parse a JSON object, telling syntax errors (400) from shape errors (422, with the field's
/// path).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Serde reads a struct from an array too (`[true]` as `{"force": true}`): a request body
    // is an object, so anything else that is valid JSON is refused before it is read.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::unprocessable(
            "invalid_request",
            "the body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            ApiError::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {inner}"),
            )
        } else {
            // A missing field is reported at the object holding it; name the field itself.
            let missing = inner
                .to_string()
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name.to_string());
            let field = match (path.as_str(), missing) {
                (".", None) => None,
                (".", Some(name)) => Some(name),
                (_, Some(name)) => Some(format!("{path}.{name}")),
                (_, None) => Some(path),
            };
            let error = ApiError::unprocessable(
                "invalid_request",
                format!("the body does not fit: {inner}"),
            );
            match field {
                Some(f) => error.with_field(f),
                None => error,
            }
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok(value)
}
