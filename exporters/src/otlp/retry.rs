//! What a send attempt came to, and how long to wait before the next one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;

/// The result of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Accepted. `rejected` items were refused in a partial-success response, with `message`.
    Accepted { rejected: u64, message: String },
    /// Failed in a way the OTLP specification calls retryable; `after` is the server's
    /// throttling hint (`Retry-After`, gRPC `RetryInfo`).
    Retryable {
        reason: String,
        after: Option<Duration>,
    },
    /// Failed for good: retrying would fail the same way.
    Permanent { reason: String },
}

impl Outcome {
    /// Accepted, with what a protobuf metrics response says was refused.
    pub fn of_metrics(resp: ExportMetricsServiceResponse) -> Self {
        let p = resp.partial_success.unwrap_or_default();
        Self::accepted(p.rejected_data_points, p.error_message)
    }

    /// Accepted, with what a protobuf traces response says was refused.
    pub fn of_traces(resp: ExportTraceServiceResponse) -> Self {
        let p = resp.partial_success.unwrap_or_default();
        Self::accepted(p.rejected_spans, p.error_message)
    }

    fn accepted(rejected: i64, message: String) -> Self {
        Outcome::Accepted {
            rejected: rejected.max(0) as u64,
            message,
        }
    }
}

/// gRPC status codes the OTLP specification lists as retryable (RESOURCE_EXHAUSTED only with
/// `RetryInfo`, decided by the caller).
pub fn grpc_code_retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss
    )
}

/// HTTP statuses the OTLP specification lists as retryable.
pub fn http_status_retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// A `Retry-After` value: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(v)?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form RFC 9110 requires senders to use.
fn httpdate_parse(v: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u64 = parts[1].parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == parts[2])? as u64 + 1;
    let year: u64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 || year < 1970 || !(1..=31).contains(&day) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Exponential backoff with ±50% jitter, ×1.5 per attempt, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
        Backoff {
            next: initial,
            max,
            rng: seed,
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*: enough to spread retries of many agents apart.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The wait before the next attempt; `hint` (from the server) wins when it is longer.
    pub fn next_delay(&mut self, hint: Option<Duration>) -> Duration {
        let base = self.next;
        self.next = base.mul_f64(1.5).min(self.max);
        let jittered = base.mul_f64(0.5 + self.random());
        match hint {
            Some(h) if h > jittered => h,
            _ => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay(None)).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(150));
        for d in &delays {
            assert!(*d <= Duration::from_millis(600), "{d:?}");
        }
        assert!(delays[7] >= Duration::from_millis(200), "{delays:?}");
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn retryable_per_spec() {
        assert!(grpc_code_retryable(tonic::Code::Unavailable));
        assert!(!grpc_code_retryable(tonic::Code::InvalidArgument));
        assert!(!grpc_code_retryable(tonic::Code::ResourceExhausted));
        for s in [429, 502, 503, 504] {
            assert!(http_status_retryable(s));
        }
        for s in [400, 401, 403, 404, 413, 500] {
            assert!(!http_status_retryable(s));
        }
    }

    #[test]
    fn retry_after_seconds_and_date() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
