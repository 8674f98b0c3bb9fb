//! The AWS clients of the deployer, built once, each counting its requests by operation (so a
//! test can prove that a second `up` sends no mutating request), and the retry backoff used for
//! IAM propagation (tests set it to zero). No I/O of its own.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use aws_types::SdkConfig;

use contract::sdk::{AwsCounters, CountRequests};

/// Delays between bounded retries of a specific error (IAM propagation, eventual consistency).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max_attempts: u32,
    /// How long `destroy` waits for Lambda to release its network interfaces in the VPC.
    pub release_wait: Duration,
}

impl Backoff {
    /// About 2 minutes in all, doubling from 1 s, capped at 20 s a wait; 45 minutes for Lambda's
    /// network interfaces (what AWS allows itself to release them after a function is deleted).
    pub const DEFAULT: Self = Self {
        first: Duration::from_secs(1),
        max_attempts: 10,
        release_wait: Duration::from_secs(45 * 60),
    };

    /// No waiting (tests).
    pub const NONE: Self = Self {
        first: Duration::ZERO,
        max_attempts: 10,
        release_wait: Duration::ZERO,
    };

    pub fn delay(&self, attempt: u32) -> Duration {
        (self.first * 2u32.saturating_pow(attempt.min(10))).min(Duration::from_secs(20))
    }
}

/// Operation names that only read (or only check, as `ValidateResourcePolicy`).
pub fn is_read_only(op: &str) -> bool {
    ["Get", "Describe", "List", "Validate"]
        .iter()
        .any(|p| op.starts_with(p))
}

#[derive(Clone, Debug)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
    pub kms: aws_sdk_kms::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub sns: aws_sdk_sns::Client,
    pub sm: aws_sdk_secretsmanager::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub cw: aws_sdk_cloudwatch::Client,
    pub sts: aws_sdk_sts::Client,
    pub requests: Arc<AwsCounters>,
    pub backoff: Backoff,
}

macro_rules! client {
    ($krate:ident, $config:expr, $counters:expr, $extra:expr) => {{
        let mut builder =
            $krate::config::Builder::from($config).interceptor(CountRequests($counters.clone()));
        if let Some(extra) = $extra {
            builder.push_interceptor(extra.clone());
        }
        $krate::Client::from_conf(builder.build())
    }};
}

impl Clients {
    /// These clients, their KMS and Secrets Manager clients in `region` (a rule's replicas and
    /// their key in another region), counting their requests with the others.
    pub fn in_region(&self, region: &str) -> Self {
        let mut c = self.clone();
        c.kms = aws_sdk_kms::Client::from_conf(
            self.kms
                .config()
                .to_builder()
                .region(aws_types::region::Region::new(region.to_owned()))
                .build(),
        );
        c.sm = aws_sdk_secretsmanager::Client::from_conf(
            self.sm
                .config()
                .to_builder()
                .region(aws_types::region::Region::new(region.to_owned()))
                .build(),
        );
        c
    }

    pub fn new(config: &SdkConfig, backoff: Backoff) -> Self {
        Self::with_interceptor(config, backoff, None)
    }

    /// [`Clients::new`] with one more interceptor on every client (the tests' fault injector:
    /// it fails the N-th mutating request as a killed process would leave it).
    pub fn with_interceptor(
        config: &SdkConfig,
        backoff: Backoff,
        extra: Option<SharedInterceptor>,
    ) -> Self {
        let requests = Arc::new(AwsCounters::default());
        let extra = extra.as_ref();
        Self {
            ec2: client!(aws_sdk_ec2, config, requests, extra),
            iam: client!(aws_sdk_iam, config, requests, extra),
            kms: client!(aws_sdk_kms, config, requests, extra),
            events: client!(aws_sdk_eventbridge, config, requests, extra),
            lambda: client!(aws_sdk_lambda, config, requests, extra),
            sns: client!(aws_sdk_sns, config, requests, extra),
            sm: client!(aws_sdk_secretsmanager, config, requests, extra),
            ssm: client!(aws_sdk_ssm, config, requests, extra),
            logs: client!(aws_sdk_cloudwatchlogs, config, requests, extra),
            cw: client!(aws_sdk_cloudwatch, config, requests, extra),
            sts: client!(aws_sdk_sts, config, requests, extra),
            requests,
            backoff,
        }
    }

    /// Every mutating request sent so far, by operation.
    pub fn mutating_requests(&self) -> Vec<(String, u64)> {
        self.requests
            .snapshot()
            .into_iter()
            .filter(|(op, _)| !is_read_only(op))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::DEFAULT;
        assert_eq!(b.delay(0), Duration::from_secs(1));
        assert_eq!(b.delay(3), Duration::from_secs(8));
        assert_eq!(b.delay(9), Duration::from_secs(20));
        assert_eq!(Backoff::NONE.delay(5), Duration::ZERO);
        assert!(is_read_only("DescribeKey") && !is_read_only("PutRolePolicy"));
    }
}
