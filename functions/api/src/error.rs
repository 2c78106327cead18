//! The API's one error type, and the only place errors become status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowgate_shared::api::{ErrorBody, ErrorDetail, ProblemView};
use flowgate_shared::definition::Problem;
use flowgate_shared::engine::Rejection;
use flowgate_shared::ports::StoreError;
use flowgate_shared::runtime::{ExecError, StartError};
use tracing::{error, warn};

/// An error answer: status, stable code, message, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub problems: Vec<ProblemView>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            problems: Vec::new(),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_problems(mut self, problems: &[Problem]) -> Self {
        self.problems = problems.iter().map(problem_view).collect();
        if self.field.is_none() {
            self.field = problems
                .first()
                .map(|p| p.path.clone())
                .filter(|p| !p.is_empty());
        }
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn run_not_found(run_id: &str) -> Self {
        Self::not_found(
            "run_not_found",
            format!("there is no run {run_id:?}; list runs with GET /v1/runs"),
        )
    }

    /// A dependency (store, queue, agent service) failed; whether to retry is in the message.
    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

pub fn problem_view(p: &Problem) -> ProblemView {
    ProblemView {
        path: p.path.clone(),
        message: p.message.clone(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            error!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
                problems: self.problems,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::BadCursor { .. } => {
                ApiError::bad_request("invalid_cursor", e.to_string()).with_field("cursor")
            }
            StoreError::Invalid { field, .. } => {
                ApiError::bad_request("invalid_request", e.to_string()).with_field(*field)
            }
            StoreError::NotFound { .. } => ApiError::not_found("not_found", e.to_string()),
            StoreError::Conflict { .. } | StoreError::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            StoreError::Unavailable { .. } => ApiError::unavailable(e.to_string()),
            StoreError::Backend { .. } | StoreError::Corrupt { .. } => {
                ApiError::internal(e.to_string())
            }
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::UnknownWorkflow(_) => {
                ApiError::unprocessable("unknown_workflow", e.to_string()).with_field("workflow")
            }
            StartError::InvalidInputs { ref problems, .. } => {
                let problems = problems.clone();
                ApiError::unprocessable("invalid_inputs", e.to_string()).with_problems(&problems)
            }
            StartError::UnknownSession(_) | StartError::SessionNotStarted(_) => {
                ApiError::unprocessable("unknown_session", e.to_string())
                    .with_field("continue_session")
            }
            StartError::ConcurrencyLimit { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "concurrency_limit",
                e.to_string(),
            ),
            StartError::Store(e) => e.into(),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let message = r.to_string();
        match r {
            Rejection::UnknownStep(_) => {
                ApiError::unprocessable("unknown_step", message).with_field("step")
            }
            Rejection::UnknownApproval(_) => ApiError::not_found("approval_not_found", message),
            Rejection::NotAnApprover { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "not_an_approver", message)
            }
            Rejection::SelfApproval { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "self_approval", message)
            }
            Rejection::CommentRequired { .. } => {
                ApiError::unprocessable("comment_required", message).with_field("comment")
            }
            Rejection::DecisionNotOffered { .. } => {
                ApiError::unprocessable("decision_not_offered", message).with_field("decision")
            }
            Rejection::RunNotActive { .. }
            | Rejection::StepNotRunning { .. }
            | Rejection::NoRunningAgentStep
            | Rejection::ApprovalClosed { .. }
            | Rejection::NotRetryable { .. }
            | Rejection::NothingToCompensate(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
        }
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Store(e) => e.into(),
            e if e.is_retryable() => ApiError::unavailable(e.to_string()),
            e => {
                warn!(error = %e, "command failed");
                ApiError::internal(e.to_string())
            }
        }
    }
}

impl From<flowgate_shared::notify::webhooks::WebhookError> for ApiError {
    fn from(e: flowgate_shared::notify::webhooks::WebhookError) -> Self {
        use flowgate_shared::notify::webhooks::WebhookError;
        let field = e.field();
        let error = match e {
            WebhookError::Store(e) => return e.into(),
            WebhookError::UnknownEvent { .. } => {
                ApiError::unprocessable("unknown_event", e.to_string())
            }
            e => ApiError::unprocessable("invalid_request", e.to_string()),
        };
        match field {
            Some(f) => error.with_field(f),
            None => error,
        }
    }
}
