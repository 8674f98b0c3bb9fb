//! Looks at (and seeds) the AWS side of a test through the SDK against moto: secrets with their
//! tags and versions, and an SQS queue subscribed to an SNS topic (or to an EventBridge bus) to
//! read notices (or change events) back.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};
use aws_types::SdkConfig;

#[derive(Debug, Clone)]
pub struct Seen {
    pub name: String,
    pub arn: String,
    pub tags: BTreeMap<String, String>,
    pub pending_deletion: bool,
    pub description: Option<String>,
}

#[derive(Debug)]
pub struct AwsSide {
    pub sm: aws_sdk_secretsmanager::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
}

impl AwsSide {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            sm: aws_sdk_secretsmanager::Client::new(config),
            sns: aws_sdk_sns::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            events: aws_sdk_eventbridge::Client::new(config),
        }
    }

    /// Every secret under `<prefix>/`, by name, planned deletions included.
    pub async fn secrets(&self, prefix: &str) -> BTreeMap<String, Seen> {
        let mut out = BTreeMap::new();
        let mut pages = self
            .sm
            .list_secrets()
            .filters(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(format!("{prefix}/"))
                    .build(),
            )
            .include_planned_deletion(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for s in page.unwrap().secret_list() {
                let name = s.name().unwrap().to_owned();
                out.insert(
                    name.clone(),
                    Seen {
                        name,
                        arn: s.arn().unwrap().to_owned(),
                        tags: s
                            .tags()
                            .iter()
                            .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap().to_owned()))
                            .collect(),
                        pending_deletion: s.deleted_date().is_some(),
                        description: s.description().map(str::to_owned),
                    },
                );
            }
        }
        out
    }

    /// The regions `name` is replicated to, as `DescribeSecret` shows them.
    pub async fn replica_regions(&self, name: &str) -> Vec<String> {
        let out = self
            .sm
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .unwrap();
        let mut regions: Vec<String> = out
            .replication_status()
            .iter()
            .filter_map(|r| r.region().map(str::to_owned))
            .collect();
        regions.sort();
        regions
    }

    /// The `AWSCURRENT` value as text (a secret-key replica holds a raw string). The stage is
    /// named: moto answers an unstaged read with the version it created last, even after
    /// `UpdateSecretVersionStage` moved `AWSCURRENT` elsewhere.
    pub async fn text(&self, name: &str) -> String {
        self.sm
            .get_secret_value()
            .secret_id(name)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .unwrap()
            .secret_string()
            .unwrap()
            .to_owned()
    }

    /// The `AWSCURRENT` value, as JSON.
    pub async fn value(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.text(name).await).unwrap()
    }

    /// Deletes a secret at once, without a recovery window.
    pub async fn delete_now(&self, name: &str) {
        self.sm
            .delete_secret()
            .secret_id(name)
            .force_delete_without_recovery(true)
            .send()
            .await
            .unwrap();
    }

    /// How many versions a secret has.
    pub async fn version_count(&self, name: &str) -> usize {
        self.sm
            .list_secret_version_ids()
            .secret_id(name)
            .include_deprecated(true)
            .send()
            .await
            .unwrap()
            .versions()
            .len()
    }

    pub async fn create(&self, name: &str, value: &str, tags: &[(&str, &str)]) -> String {
        let out = self
            .sm
            .create_secret()
            .name(name)
            .secret_string(value)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
            .await
            .unwrap();
        out.arn().unwrap().to_owned()
    }

    /// A topic with an SQS queue subscribed: (topic ARN, queue URL).
    pub async fn topic_with_queue(&self, name: &str) -> (String, String) {
        let topic = self.sns.create_topic().name(name).send().await.unwrap();
        let topic_arn = topic.topic_arn().unwrap().to_owned();
        let queue_url = self.queue_on(&topic_arn, name).await;
        (topic_arn, queue_url)
    }

    /// A new SQS queue `name` that an EventBridge rule on `bus` (made when not the default
    /// one) sends the replicator's change events to: the queue URL. Read them with
    /// [`Self::notices`].
    pub async fn bus_with_queue(&self, bus: &str, name: &str) -> String {
        if bus != "default" {
            self.events
                .create_event_bus()
                .name(bus)
                .send()
                .await
                .unwrap();
        }
        let (queue_url, queue_arn) = self.queue(name).await;
        self.events
            .put_rule()
            .name(name)
            .event_bus_name(bus)
            .event_pattern(serde_json::json!({"source": [contract::events::SOURCE]}).to_string())
            .send()
            .await
            .unwrap();
        self.events
            .put_targets()
            .rule(name)
            .event_bus_name(bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(queue_arn)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        queue_url
    }

    /// A new SQS queue `name`: its URL and ARN.
    async fn queue(&self, name: &str) -> (String, String) {
        let queue = self
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .unwrap();
        let queue_url = queue.queue_url().unwrap().to_owned();
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let queue_arn = attrs
            .attributes()
            .unwrap()
            .get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .unwrap()
            .clone();
        (queue_url, queue_arn)
    }

    /// A new SQS queue `name` subscribed to an existing topic: the queue URL.
    pub async fn queue_on(&self, topic_arn: &str, name: &str) -> String {
        let (queue_url, queue_arn) = self.queue(name).await;
        self.sns
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await
            .unwrap();
        queue_url
    }

    /// The SNS messages that reached the queue: waits (long polls, up to 30 s) until `expected`
    /// have arrived, then one more second for any extra, which the caller's count then shows.
    pub async fn notices(&self, queue_url: &str, expected: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut out = Vec::new();
        let mut settled = false;
        while !settled {
            settled = out.len() >= expected || std::time::Instant::now() > deadline;
            let got = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            if !got.messages().is_empty() {
                settled = false;
            }
            out.extend(got.messages().iter().filter_map(|m| m.body()).map(|b| {
                let envelope: serde_json::Value = serde_json::from_str(b).unwrap();
                envelope["Message"].as_str().unwrap_or(b).to_owned()
            }));
            if std::time::Instant::now() > deadline + std::time::Duration::from_secs(5) {
                break;
            }
        }
        out
    }
}
