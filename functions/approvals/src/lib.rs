//! Lambda function `flowgate-approvals`: Slack interactivity (`POST /slack/interactions`),
//! approval decisions (`POST /v1/approvals/{id}/decision`, API key or Standard Webhooks
//! signature), one-time approval links (`/approvals/link/{token}`) and `GET /v1/approvals`.
//!
//! The handlers live in `flowgate-api` (one router, one OpenAPI document, one error shape); this
//! function serves only the approval routes, so a burst of Slack clicks scales on its own and
//! its IAM role needs only what deciding needs. See [`flowgate_api::approvals_app`].

pub use flowgate_api::approvals_app as app;
