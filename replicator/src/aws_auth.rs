//! Vault's AWS IAM auth method: the replicator proves its IAM role by handing Vault a signed
//! `sts:GetCallerIdentity` request, which Vault forwards to STS. Building the request is pure
//! (credentials and time in, login body out); no secret key leaves the process, only a signature.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine as _;
use serde_json::{Value, json};

/// Vault's default STS endpoint and its signing region.
pub const STS_URL: &str = "https://sts.amazonaws.com/";
pub const STS_REGION: &str = "us-east-1";

/// The STS endpoint the login request is signed for; Vault's AWS auth method must be configured
/// with the same one (`sts_endpoint`, `sts_region`). Other partitions (China, GovCloud) and
/// regional endpoints need their own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsEndpoint {
    /// `https://HOST/`.
    pub url: String,
    pub host: String,
    pub region: String,
}

impl Default for StsEndpoint {
    fn default() -> Self {
        Self {
            url: STS_URL.into(),
            host: "sts.amazonaws.com".into(),
            region: STS_REGION.into(),
        }
    }
}

impl StsEndpoint {
    /// From an endpoint URL and a region, either optional: the global endpoint by default; a
    /// region alone means its regional endpoint; a regional URL alone says its region.
    pub fn new(url: Option<&str>, region: Option<&str>) -> Result<Self, String> {
        let (url, region) = (
            url.filter(|u| !u.is_empty()),
            region.filter(|r| !r.is_empty()),
        );
        if let Some(r) = region
            && !r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("{r:?} is not a region name (like eu-west-1)"));
        }
        let Some(url) = url else {
            return Ok(match region {
                None => Self::default(),
                Some(r) => {
                    let host = regional_host("sts", r);
                    Self {
                        url: format!("https://{host}/"),
                        host,
                        region: r.to_owned(),
                    }
                }
            });
        };
        let host = url
            .strip_prefix("https://")
            .map(|h| h.trim_end_matches('/'))
            .filter(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@', ' ']))
            .ok_or_else(|| format!("{url:?} is not an endpoint URL (https://HOST/)"))?;
        let from_host = match host.split('.').collect::<Vec<_>>().as_slice() {
            ["sts", "amazonaws", "com"] => Some(STS_REGION),
            ["sts", r, "amazonaws", "com"] | ["sts", r, "amazonaws", "com", "cn"] => Some(*r),
            _ => None,
        };
        let region = region.or(from_host).ok_or_else(|| {
            format!(
                "the signing region of {url:?} cannot be told from its name: give the region too"
            )
        })?;
        Ok(Self {
            url: format!("https://{host}/"),
            host: host.to_owned(),
            region: region.to_owned(),
        })
    }
}

/// The host of `service`'s endpoint in `region` (China's regions under `amazonaws.com.cn`).
pub fn regional_host(service: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") { ".cn" } else { "" };
    format!("{service}.{region}.amazonaws.com{suffix}")
}

pub const STS_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// The content type of an AWS Query protocol request.
pub const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// The headers SigV4 adds (`authorization`, `x-amz-date`, and `x-amz-security-token` with
/// temporary credentials) to a `POST` of `body` to `url` with `headers`, for `service` in
/// `region` (the service's signing name and region). Pure: credentials and time in.
pub fn sign_post(
    credentials: &Credentials,
    (service, region): (&str, &str),
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let request = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("signable request: {e}"))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// The JSON body of `POST auth/<mount>/login` for `role`. `server_id` is the value of
/// `X-Vault-AWS-IAM-Server-ID` when the Vault auth method requires one (signed, so a request
/// made for another Vault cannot be replayed here).
pub fn login_body(
    credentials: &Credentials,
    role: &str,
    server_id: Option<&str>,
    sts: &StsEndpoint,
    time: SystemTime,
) -> Result<Value, String> {
    let mut headers: Vec<(&str, &str)> =
        vec![("host", sts.host.as_str()), ("content-type", CONTENT_TYPE)];
    if let Some(id) = server_id {
        headers.push(("x-vault-aws-iam-server-id", id));
    }
    let signed = sign_post(
        credentials,
        ("sts", &sts.region),
        &sts.url,
        &headers,
        STS_BODY.as_bytes(),
        time,
    )?;
    let mut all = serde_json::Map::new();
    for (k, v) in headers
        .iter()
        .copied()
        .chain(signed.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        all.insert(canonical_header(k), json!([v]));
    }
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    Ok(json!({
        "role": role,
        "iam_http_request_method": "POST",
        "iam_request_url": b64(sts.url.as_bytes()),
        "iam_request_body": b64(STS_BODY.as_bytes()),
        "iam_request_headers": b64(Value::Object(all).to_string().as_bytes()),
    }))
}

/// `x-amz-date` → `X-Amz-Date`, as Go's http.Header keys are written.
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn decode(v: &Value) -> String {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_signed_request_has_the_shape_vault_expects() {
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token".into()),
            None,
            "test",
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_795_867_200); // 2026-11-28T12:00:00Z
        let body = login_body(
            &creds,
            "replicator",
            Some("vault.example.com"),
            &StsEndpoint::default(),
            t,
        )
        .unwrap();
        assert_eq!(body["role"], "replicator");
        assert_eq!(body["iam_http_request_method"], "POST");
        assert_eq!(
            decode(&body["iam_request_url"]),
            "https://sts.amazonaws.com/"
        );
        assert_eq!(
            decode(&body["iam_request_body"]),
            "Action=GetCallerIdentity&Version=2011-06-15"
        );
        let headers: Value = serde_json::from_str(&decode(&body["iam_request_headers"])).unwrap();
        assert_eq!(headers["Host"], json!(["sts.amazonaws.com"]));
        assert_eq!(
            headers["X-Vault-Aws-Iam-Server-Id"],
            json!(["vault.example.com"])
        );
        assert_eq!(headers["X-Amz-Date"], json!(["20261128T120000Z"]));
        assert_eq!(headers["X-Amz-Security-Token"], json!(["session-token"]));
        let auth = headers["Authorization"][0].as_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261128/us-east-1/sts/aws4_request, "
            ),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-vault-aws-iam-server-id"), "{auth}");
        // A known vector, computed outside this code (botocore's SigV4Auth and a by-hand HMAC
        // chain agree on it): a change in what is signed would make Vault's STS call fail.
        assert_eq!(
            auth.rsplit("Signature=").next().unwrap(),
            "e2afdd3b34da1d01ca7595a3497df09e8fed4c77c8f9af2924e8fc74c19ac1f0"
        );
        // Deterministic for the same inputs; never carries the secret key.
        assert_eq!(
            body,
            login_body(
                &creds,
                "replicator",
                Some("vault.example.com"),
                &StsEndpoint::default(),
                t
            )
            .unwrap()
        );
        assert!(!body.to_string().contains("wJalrXUtnFEMI"));
        assert!(!decode(&body["iam_request_headers"]).contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn other_partitions_sign_for_their_own_sts() {
        let cn = StsEndpoint::new(None, Some("cn-north-1")).unwrap();
        assert_eq!(cn.url, "https://sts.cn-north-1.amazonaws.com.cn/");
        assert_eq!(cn.region, "cn-north-1");
        let gov = StsEndpoint::new(Some("https://sts.us-gov-west-1.amazonaws.com"), None).unwrap();
        assert_eq!(
            (gov.host.as_str(), gov.region.as_str()),
            ("sts.us-gov-west-1.amazonaws.com", "us-gov-west-1")
        );
        let private = StsEndpoint::new(
            Some("https://vpce-1.sts.example.internal/"),
            Some("eu-west-1"),
        )
        .unwrap();
        assert_eq!(private.region, "eu-west-1");
        assert_eq!(
            StsEndpoint::new(None, None).unwrap(),
            StsEndpoint::default()
        );
        for (url, region, why) in [
            (
                Some("http://sts.amazonaws.com/"),
                None,
                "not an endpoint URL",
            ),
            (
                Some("https://sts.example.internal/"),
                None,
                "give the region",
            ),
            (None, Some("EU West"), "not a region name"),
        ] {
            let e = StsEndpoint::new(url, region).unwrap_err();
            assert!(e.contains(why), "{url:?} {region:?}: {e}");
        }
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let body = login_body(&creds, "r", None, &cn, UNIX_EPOCH).unwrap();
        let headers: Value = serde_json::from_str(&decode(&body["iam_request_headers"])).unwrap();
        assert_eq!(headers["Host"], json!(["sts.cn-north-1.amazonaws.com.cn"]));
        assert!(
            headers["Authorization"][0]
                .as_str()
                .unwrap()
                .contains("/cn-north-1/sts/aws4_request")
        );
        assert_eq!(
            decode(&body["iam_request_url"]),
            "https://sts.cn-north-1.amazonaws.com.cn/"
        );
    }
}
