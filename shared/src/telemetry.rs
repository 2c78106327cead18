//! Logging set-up shared by every binary: JSON lines on Lambda (CloudWatch parses them), compact
//! text on a terminal. The filter comes from `RUST_LOG`, else from Lambda's application log
//! level (`AWS_LAMBDA_LOG_LEVEL`, set by the function's `LoggingConfig`), else `info`.

use tracing_subscriber::EnvFilter;

/// Output format for [`init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// JSON when running inside Lambda, text otherwise.
    pub fn detect() -> Self {
        if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }
}

/// Install the global subscriber once; later calls are ignored (tests call it freely).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(lambda_level(
            std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .without_time() // Lambda stamps every line itself
            .try_init(),
        // Colour only on a terminal: piped or redirected logs stay plain text.
        LogFormat::Text => builder
            .compact()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// The `tracing` level for Lambda's `ApplicationLogLevel` (`TRACE` … `FATAL`; `info` when unset
/// or unknown).
fn lambda_level(level: Option<&str>) -> &'static str {
    match level.map(str::to_ascii_uppercase).as_deref() {
        Some("TRACE") => "trace",
        Some("DEBUG") => "debug",
        Some("WARN") => "warn",
        Some("ERROR" | "FATAL") => "error",
        _ => "info",
    }
}

#[cfg(test)]
mod tests {
    use super::lambda_level;

    #[test]
    fn lambda_application_log_levels_map_to_tracing_levels() {
        assert_eq!(lambda_level(Some("DEBUG")), "debug");
        assert_eq!(lambda_level(Some("warn")), "warn");
        assert_eq!(lambda_level(Some("FATAL")), "error");
        assert_eq!(lambda_level(Some("bogus")), "info");
        assert_eq!(lambda_level(None), "info");
    }
}
