//! `GET /v1/analytics`: per-workflow figures over a window (see [`crate::analytics`] for what
//! each number means).

use axum::Json;
use axum::extract::State;
use flowgate_shared::api::ErrorBody;
use flowgate_shared::duration::DurationSpec;
use flowgate_shared::model::Millis;
use flowgate_shared::ports::{MAX_PAGE_SIZE, RunQuery, RunSort, SortOrder};
use serde::Deserialize;

use super::Query;
use crate::Services;
use crate::analytics::{self, Analytics, MAX_RUNS, MAX_WINDOW_MS, MIN_WINDOW_MS};
use crate::auth::Principal;
use crate::error::ApiError;

/// The window when none is given.
const DEFAULT_WINDOW: &str = "24h";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnalyticsParams {
    /// How far back from now, e.g. `1h`, `24h` (default), `7d`, `30d`; 1 minute to 90 days.
    window: Option<String>,
    /// Only this workflow's runs.
    workflow: Option<String>,
}

/// Per-workflow figures over a window: runs, success rate, p50/p95 duration, agent turns and
/// cost, approval wait times, and runs over time. Computed from the stored runs created in
/// the window (at most 5,000, newest first; `truncated` says when there were more).
#[utoipa::path(
    get,
    path = "/v1/analytics",
    tag = "runs",
    params(AnalyticsParams),
    responses(
        (status = 200, description = "The figures", body = Analytics),
        (status = 400, description = "Bad window or unknown parameter (`invalid_query`, naming it)", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 503, description = "The store is unavailable; retry", body = ErrorBody),
    )
)]
pub(crate) async fn analytics(
    State(s): State<Services>,
    _: Principal,
    Query(params): Query<AnalyticsParams>,
) -> Result<Json<Analytics>, ApiError> {
    let window_text = params
        .window
        .as_deref()
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .unwrap_or(DEFAULT_WINDOW)
        .to_string();
    let window_ms = window(&window_text)?;
    let workflow = params.workflow.filter(|w| !w.trim().is_empty());
    let now = s.clock.now_ms();
    let from = now - window_ms;

    let mut query = RunQuery {
        workflow_id: workflow.clone(),
        created_from: Some(from),
        sort: RunSort::StartedAt,
        order: SortOrder::Desc,
        limit: MAX_PAGE_SIZE,
        ..RunQuery::default()
    };
    let mut runs = Vec::new();
    let mut truncated = false;
    loop {
        let page = s.store.list_runs(&query).await?;
        runs.extend(page.runs);
        match page.next_cursor {
            Some(_) if runs.len() >= MAX_RUNS => {
                truncated = true;
                break;
            }
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    runs.truncate(MAX_RUNS);
    let (totals, workflows, series) = analytics::compute(&runs, from, now);
    Ok(Json(Analytics {
        window: window_text,
        from,
        to: now,
        workflow,
        runs_read: runs.len(),
        truncated,
        totals,
        workflows,
        series,
    }))
}

/// The window in milliseconds, or a 400 naming `window`.
fn window(text: &str) -> Result<Millis, ApiError> {
    let bad =
        |message: String| ApiError::bad_request("invalid_query", message).with_field("window");
    let spec = DurationSpec::parse(text).map_err(|e| bad(format!("window: {e}")))?;
    let ms = spec.millis_i64();
    if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&ms) {
        return Err(bad(format!(
            "window must be between 1m and 90d, got {text:?}"
        )));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_are_bounded() {
        assert_eq!(window("24h").ok(), Some(86_400_000));
        assert_eq!(window("7d").ok(), Some(7 * 86_400_000));
        assert_eq!(window("1h 30m").ok(), Some(5_400_000));
        for bad in ["", "soon", "30s", "91d", "-1h"] {
            let e = window(bad).expect_err(bad);
            assert_eq!(e.code, "invalid_query", "{bad}");
            assert_eq!(e.field.as_deref(), Some("window"), "{bad}");
        }
    }
}
