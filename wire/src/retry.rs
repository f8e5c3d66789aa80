//! How long a server asks a client to wait: `Retry-After` (seconds or an HTTP date, RFC 9110)
//! and `retry-after-ms` (milliseconds, as Azure sends it). Read the same way by the agent (the
//! cloud's 503 and 429) and by the cloud's remote analyzers.

use std::time::{Duration, SystemTime};

/// The wait asked for by a `retry-after-ms` value (preferred: finer) or a `Retry-After` value,
/// measured from `now` for an HTTP date (a date in the past: no wait). `None` when neither is
/// present or parses.
pub fn retry_after(
    retry_after_ms: Option<&str>,
    retry_after: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    let ms = retry_after_ms
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    ms.or_else(|| {
        let value = retry_after?.trim();
        match value.parse::<u64>() {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                let at = httpdate::parse_http_date(value).ok()?;
                Some(at.duration_since(now).unwrap_or(Duration::ZERO))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_milliseconds_and_http_dates_are_read() {
        let now = SystemTime::now();
        assert_eq!(
            retry_after(None, Some("3"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(Some("250"), Some("3"), now),
            Some(Duration::from_millis(250))
        );
        let in_30s = httpdate::fmt_http_date(now + Duration::from_secs(30));
        let wait = retry_after(None, Some(&in_30s), now).expect("an HTTP date parses");
        // HTTP dates have whole seconds.
        assert!(
            wait > Duration::from_secs(28) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        let past = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(retry_after(None, Some(past), now), Some(Duration::ZERO));
        assert_eq!(retry_after(None, Some("soon"), now), None);
        assert_eq!(retry_after(Some("x"), None, now), None);
        assert_eq!(retry_after(None, None, now), None);
    }
}
