//! EventBridge schedule expressions: `cron(min hour day-of-month month day-of-week year)` and
//! `rate(N minute|minutes|hour|hours|day|days)`.
//!
//! Checked here, not at deploy time, because EventBridge's own error ("Parameter
//! ScheduleExpression is not valid") names neither the field nor the rule that was broken.

/// Allowed characters and numeric range of one cron field.
struct CronField {
    name: &'static str,
    min: u32,
    max: u32,
    /// Characters besides digits and `, - * /`.
    extra: &'static str,
    /// Whether three-letter names (JAN, MON) are allowed.
    names: bool,
}

const CRON_FIELDS: [CronField; 6] = [
    CronField {
        name: "minutes",
        min: 0,
        max: 59,
        extra: "",
        names: false,
    },
    CronField {
        name: "hours",
        min: 0,
        max: 23,
        extra: "",
        names: false,
    },
    CronField {
        name: "day-of-month",
        min: 1,
        max: 31,
        extra: "?LW",
        names: false,
    },
    CronField {
        name: "month",
        min: 1,
        max: 12,
        extra: "",
        names: true,
    },
    CronField {
        name: "day-of-week",
        min: 1,
        max: 7,
        extra: "?L#",
        names: true,
    },
    CronField {
        name: "year",
        min: 1970,
        max: 2199,
        extra: "",
        names: false,
    },
];

/// Check an EventBridge schedule expression; the error says what to write instead.
pub(super) fn check_expression(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if let Some(body) = expr.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
        check_cron(body)
    } else if let Some(body) = expr.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        check_rate(body)
    } else {
        Err(format!(
            "schedule expression {expr:?} is not cron(...) or rate(...); write e.g. \"cron(0 2 * * ? *)\" (02:00 every day) or \"rate(6 hours)\""
        ))
    }
}

fn check_cron(body: &str) -> Result<(), String> {
    let parts: Vec<&str> = body.split_whitespace().collect();
    if parts.len() != 6 {
        return Err(format!(
            "cron expression has {} fields; EventBridge needs 6: minutes hours day-of-month month day-of-week year, e.g. \"cron(0 2 * * ? *)\"",
            parts.len()
        ));
    }
    for (part, field) in parts.iter().zip(&CRON_FIELDS) {
        check_cron_field(part, field)?;
    }
    let (dom, dow) = (parts[2], parts[4]);
    if (dom == "?") == (dow == "?") {
        return Err(format!(
            "cron day-of-month ({dom}) and day-of-week ({dow}): exactly one of them must be \"?\", e.g. \"cron(0 2 * * ? *)\" or \"cron(0 2 ? * MON-FRI *)\""
        ));
    }
    Ok(())
}

fn check_cron_field(part: &str, field: &CronField) -> Result<(), String> {
    let bad = |why: &str| Err(format!("cron {} field {part:?} {why}", field.name));
    let allowed = |c: char| {
        c.is_ascii_digit()
            || ",-*/".contains(c)
            || field.extra.contains(c)
            || (field.names && c.is_ascii_alphabetic())
    };
    if let Some(c) = part.chars().find(|c| !allowed(*c)) {
        return bad(&format!("contains {c:?}, which this field does not allow"));
    }
    // Numbers right of `/` are increments and right of `#` are the nth weekday: not in range.
    for item in part.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        if let Some(step) = step
            && !matches!(step.parse::<u32>(), Ok(n) if n >= 1)
        {
            return bad(&format!(
                "has increment {step:?}; write a whole number of 1 or more after \"/\""
            ));
        }
        let base = base.split_once('#').map_or(base, |(b, _)| b);
        for number in base.split('-') {
            let digits = number.trim_end_matches(['L', 'W']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            match digits.parse::<u32>() {
                Ok(n) if (field.min..=field.max).contains(&n) => {}
                _ => {
                    return bad(&format!(
                        "has {digits}, outside {}..={}",
                        field.min, field.max
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_rate(body: &str) -> Result<(), String> {
    let usage = "write rate(1 minute), rate(5 minutes), rate(1 hour), rate(6 hours), rate(1 day) or rate(7 days)";
    let mut parts = body.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "rate expression \"rate({body})\" needs a number and a unit; {usage}"
        ));
    };
    let n = match value.parse::<u64>() {
        Ok(n) if n >= 1 => n,
        _ => {
            return Err(format!(
                "rate value {value:?} must be a whole number of 1 or more; {usage}"
            ));
        }
    };
    let singular = match unit {
        "minute" | "hour" | "day" => true,
        "minutes" | "hours" | "days" => false,
        _ => {
            return Err(format!(
                "rate unit {unit:?} is not minute(s), hour(s) or day(s); {usage}"
            ));
        }
    };
    if singular != (n == 1) {
        let fixed = if n == 1 {
            unit.trim_end_matches('s').to_string()
        } else {
            format!("{unit}s")
        };
        return Err(format!(
            "EventBridge needs a singular unit for 1 and a plural one otherwise: write \"rate({n} {fixed})\""
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_expressions() {
        for e in [
            "cron(0 2 * * ? *)",
            "cron(0/15 * * * ? *)",
            "cron(0 9 ? * MON-FRI *)",
            "cron(30 8 1 JAN,JUL ? 2030)",
            "cron(0 18 L * ? *)",
            "cron(0 10 ? * 6L 2025-2030)",
            "cron(0 10 ? * 2#1 *)",
            "cron(0 10 15W * ? *)",
            "rate(1 minute)",
            "rate(5 minutes)",
            "rate(1 hour)",
            "rate(12 hours)",
            "rate(1 day)",
            "rate(7 days)",
        ] {
            assert_eq!(check_expression(e), Ok(()), "{e}");
        }
    }

    #[test]
    fn refuses_invalid_expressions() {
        for (e, expect) in [
            ("0 2 * * *", "not cron(...) or rate(...)"),
            ("at(2030-01-01T00:00:00)", "not cron(...) or rate(...)"),
            ("cron(0 2 * * *)", "has 5 fields"),
            ("cron(0 2 * * * *)", "exactly one of them must be \"?\""),
            ("cron(0 2 ? * ? *)", "exactly one of them must be \"?\""),
            (
                "cron(61 2 * * ? *)",
                "minutes field \"61\" has 61, outside 0..=59",
            ),
            ("cron(0 24 * * ? *)", "hours field"),
            ("cron(0 2 0 * ? *)", "day-of-month field \"0\" has 0"),
            ("cron(0 2 * 13 ? *)", "month field"),
            ("cron(0 2 ? * 8 *)", "day-of-week field"),
            ("cron(0/0 2 * * ? *)", "increment \"0\""),
            ("cron(0 2 * * ? 1969)", "year field"),
            ("cron(0 2 * * ? x)", "contains 'x'"),
            ("rate(0 minutes)", "1 or more"),
            ("rate(five minutes)", "1 or more"),
            ("rate(5)", "needs a number and a unit"),
            ("rate(5 weeks)", "not minute(s), hour(s) or day(s)"),
            ("rate(1 minutes)", "write \"rate(1 minute)\""),
            ("rate(5 hour)", "write \"rate(5 hours)\""),
        ] {
            match check_expression(e) {
                Ok(()) => panic!("{e} was accepted"),
                Err(msg) => assert!(msg.contains(expect), "{e}: {msg}"),
            }
        }
    }
}
