//! A loopback stand-in for Lambda's code signing, which moto does not have (and for the errors
//! of a role not yet propagated, which moto never gives): a proxy in front of
//! moto that serves code signing configs (create, list, update, delete, their tags) and a
//! function's config (put, get, delete) from memory, and forwards everything else. Like Lambda
//! with `UntrustedArtifactOnDeployment = Enforce`, it refuses `CreateFunction` and
//! `UpdateFunctionCode` of a function under such a config unless the zip was signed by an
//! allowed profile: AWS Signer cannot run here, so the test says which zips a profile signed
//! ([`SigningStandIn::sign`]) and the stand-in checks the uploaded bytes against that. Loopback
//! network I/O only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::fault_proxy::{exchange, read_request};

#[derive(Debug, Default)]
struct State {
    upstream: String,
    /// Code signing configs by ARN: (the config as Lambda answers it, its tags).
    configs: BTreeMap<String, (Value, BTreeMap<String, String>)>,
    /// The config each function runs under ("": none), for the functions made or changed
    /// through the stand-in.
    functions: BTreeMap<String, String>,
    /// (profile version ARN, SHA-256 of a zip it signed).
    signed: BTreeSet<(String, String)>,
    /// The profile that signed the code each function runs, as Lambda reports it
    /// (`SigningProfileVersionArn`), for the functions whose code went through the stand-in.
    signer: BTreeMap<String, Option<String>>,
    next: u32,
    /// Zips refused, by function.
    refused: Vec<String>,
    /// `CreateFunction`s still to answer with this error (code, message), as Lambda does while
    /// a new role has not propagated.
    refuse_create: Vec<(String, String)>,
}

/// A code signing config as the stand-in holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    pub arn: String,
    /// The signing profile versions allowed.
    pub profiles: Vec<String>,
    /// `UntrustedArtifactOnDeployment`.
    pub policy: String,
    pub tags: BTreeMap<String, String>,
}

/// A running stand-in; it stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct SigningStandIn {
    /// `http://127.0.0.1:port`, to give the deployer instead of moto's address.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl SigningStandIn {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Mutex::new(State {
            upstream: upstream
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            ..State::default()
        }));
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, s.clone()));
            }
        });
        Self { url, state }
    }

    /// Records that `profile` signed `zip`, as AWS Signer would have.
    pub fn sign(&self, profile: &str, zip: &[u8]) {
        self.state
            .lock()
            .unwrap()
            .signed
            .insert((profile.to_owned(), hex(zip)));
    }

    /// The code signing configs.
    pub fn configs(&self) -> Vec<SigningConfig> {
        self.state
            .lock()
            .unwrap()
            .configs
            .iter()
            .map(|(arn, (c, tags))| {
                let profiles = c["AllowedPublishers"]["SigningProfileVersionArns"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|p| p.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let policy = c["CodeSigningPolicies"]["UntrustedArtifactOnDeployment"]
                    .as_str()
                    .unwrap_or("Warn")
                    .to_owned();
                SigningConfig {
                    arn: arn.clone(),
                    profiles,
                    policy,
                    tags: tags.clone(),
                }
            })
            .collect()
    }

    /// The config each function runs under (the functions it saw made or changed).
    pub fn functions(&self) -> BTreeMap<String, String> {
        let mut all = self.state.lock().unwrap().functions.clone();
        all.retain(|_, arn| !arn.is_empty());
        all
    }

    /// Answers the next `CreateFunction` with the error `code` and `message`, once per call.
    pub fn refuse_next_create_function(&self, code: &str, message: &str) {
        self.state
            .lock()
            .unwrap()
            .refuse_create
            .push((code.to_owned(), message.to_owned()));
    }

    /// The functions whose code was refused, in order.
    pub fn refused(&self) -> Vec<String> {
        self.state.lock().unwrap().refused.clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn answer(status: u16, body: Option<Value>) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Bad Request",
    };
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn error(status: u16, code: &str, message: &str) -> Vec<u8> {
    let mut a = answer(status, Some(json!({"Type": "User", "message": message})));
    let at = a.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
    let header = format!("x-amzn-ErrorType: {code}\r\n");
    a.splice(at..at, header.into_bytes());
    a
}

/// Whether the code `zip` may be deployed under the config `arn` (none: anything may), and
/// the allowed profile that signed it (none without a config: Lambda checks nothing then).
fn verified(state: &State, arn: Option<&String>, zip: &[u8]) -> (bool, Option<String>) {
    let Some((config, _)) = arn.and_then(|a| state.configs.get(a)) else {
        return (true, None);
    };
    let digest = hex(zip);
    let signer = config["AllowedPublishers"]["SigningProfileVersionArns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|p| state.signed.contains(&((*p).to_owned(), digest.clone())))
        .map(str::to_owned);
    let enforced = config["CodeSigningPolicies"]["UntrustedArtifactOnDeployment"] == "Enforce";
    (!enforced || signer.is_some(), signer)
}

fn zip_of(body: &Value) -> Vec<u8> {
    let zip = body["ZipFile"]
        .as_str()
        .or_else(|| body["Code"]["ZipFile"].as_str())
        .unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(zip)
        .unwrap_or_default()
}

/// What the stand-in answers itself; `None`: forward to moto.
fn handle(state: &mut State, method: &str, path: &str, body: &Value) -> Option<Vec<u8>> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let refused = "Lambda could not verify the code's signature (stand-in: the zip was not signed by an allowed profile)";
    match (method, &seg[..]) {
        ("POST", ["2020-04-22", "code-signing-configs"]) => {
            state.next += 1;
            let id = format!("csc-{:017x}", state.next);
            let arn = format!(
                "arn:aws:lambda:{}:{}:code-signing-config:{id}",
                crate::REGION,
                crate::ACCOUNT
            );
            let config = json!({
                "CodeSigningConfigId": id,
                "CodeSigningConfigArn": arn,
                "Description": body["Description"],
                "AllowedPublishers": body["AllowedPublishers"],
                "CodeSigningPolicies": body["CodeSigningPolicies"],
                "LastModified": "2026-12-05T00:00:00.000+0000",
            });
            let tags = body["Tags"]
                .as_object()
                .map(|t| {
                    t.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            state.configs.insert(arn, (config.clone(), tags));
            Some(answer(201, Some(json!({"CodeSigningConfig": config}))))
        }
        ("GET", ["2020-04-22", "code-signing-configs"]) => {
            let all: Vec<&Value> = state.configs.values().map(|(c, _)| c).collect();
            Some(answer(200, Some(json!({"CodeSigningConfigs": all}))))
        }
        ("PUT", ["2020-04-22", "code-signing-configs", arn]) => {
            let Some((config, _)) = state.configs.get_mut(*arn) else {
                return Some(error(404, "ResourceNotFoundException", "no such config"));
            };
            for field in ["Description", "AllowedPublishers", "CodeSigningPolicies"] {
                if !body[field].is_null() {
                    config[field] = body[field].clone();
                }
            }
            Some(answer(200, Some(json!({"CodeSigningConfig": config}))))
        }
        ("DELETE", ["2020-04-22", "code-signing-configs", arn]) => {
            if state.functions.values().any(|a| a == *arn) {
                return Some(error(
                    409,
                    "ResourceConflictException",
                    "the code signing config is in use by a function",
                ));
            }
            match state.configs.remove(*arn) {
                Some(_) => Some(answer(204, None)),
                None => Some(error(404, "ResourceNotFoundException", "no such config")),
            }
        }
        ("GET", ["2017-03-31", "tags", arn]) if arn.contains(":code-signing-config:") => {
            match state.configs.get(*arn) {
                Some((_, tags)) => Some(answer(200, Some(json!({"Tags": tags})))),
                None => Some(error(404, "ResourceNotFoundException", "no such config")),
            }
        }
        ("PUT", ["2020-06-30", "functions", name, "code-signing-config"]) => {
            let arn = body["CodeSigningConfigArn"].as_str().unwrap_or("");
            if !state.configs.contains_key(arn) {
                return Some(error(
                    404,
                    "CodeSigningConfigNotFoundException",
                    "no such config",
                ));
            }
            state.functions.insert((*name).to_owned(), arn.to_owned());
            Some(answer(
                200,
                Some(json!({"CodeSigningConfigArn": arn, "FunctionName": name})),
            ))
        }
        // Moto answers for a function the stand-in never saw (and 404 for none).
        ("GET", ["2020-06-30", "functions", name, "code-signing-config"]) => {
            let arn = state.functions.get(*name)?;
            Some(answer(
                200,
                Some(json!({"CodeSigningConfigArn": arn, "FunctionName": name})),
            ))
        }
        ("DELETE", ["2020-06-30", "functions", name, "code-signing-config"]) => {
            state.functions.insert((*name).to_owned(), String::new());
            Some(answer(204, None))
        }
        ("POST", ["2015-03-31", "functions"]) => {
            if !state.refuse_create.is_empty() {
                let (code, message) = state.refuse_create.remove(0);
                return Some(error(400, &code, &message));
            }
            let name = body["FunctionName"].as_str().unwrap_or("").to_owned();
            let arn = body["CodeSigningConfigArn"].as_str().map(str::to_owned);
            if let Some(a) = &arn
                && !state.configs.contains_key(a)
            {
                return Some(error(
                    404,
                    "CodeSigningConfigNotFoundException",
                    "no such config",
                ));
            }
            let (ok, signer) = verified(state, arn.as_ref(), &zip_of(body));
            if !ok {
                state.refused.push(name);
                return Some(error(400, "CodeVerificationFailedException", refused));
            }
            state.signer.insert(name.clone(), signer);
            state.functions.insert(name, arn.unwrap_or_default());
            None
        }
        ("PUT", ["2015-03-31", "functions", name, "code"]) => {
            let arn = state
                .functions
                .get(*name)
                .cloned()
                .filter(|a| !a.is_empty());
            let (ok, signer) = verified(state, arn.as_ref(), &zip_of(body));
            if !ok {
                state.refused.push((*name).to_owned());
                return Some(error(400, "CodeVerificationFailedException", refused));
            }
            state.signer.insert((*name).to_owned(), signer);
            None
        }
        ("DELETE", ["2015-03-31", "functions", name]) => {
            state.functions.remove(*name);
            state.signer.remove(*name);
            None
        }
        _ => None,
    }
}

/// moto's `GetFunction` and `GetFunctionConfiguration` answers, with the
/// `SigningProfileVersionArn` Lambda reports for code a profile signed.
fn with_signer(state: &Mutex<State>, method: &str, path: &str, answer: Vec<u8>) -> Vec<u8> {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (name, nested) = match (method, &seg[..]) {
        ("GET", ["2015-03-31", "functions", name]) => (*name, true),
        ("GET", ["2015-03-31", "functions", name, "configuration"]) => (*name, false),
        _ => return answer,
    };
    let Some(Some(signer)) = state.lock().unwrap().signer.get(name).cloned() else {
        return answer;
    };
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(answer.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&answer[..at]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return answer;
    }
    let Ok(mut body) = serde_json::from_slice::<Value>(&answer[at..]) else {
        return answer;
    };
    let conf = if nested {
        &mut body["Configuration"]
    } else {
        &mut body
    };
    conf["SigningProfileVersionArn"] = Value::String(signer);
    let body = body.to_string();
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("content-length:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

async fn serve(client: TcpStream, state: Arc<Mutex<State>>) {
    let mut reader = BufReader::new(client);
    let Some(request) = read_request(&mut reader).await else {
        return;
    };
    let mut client = reader.into_inner();
    let at = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&request[..at]).into_owned();
    let body: Value = serde_json::from_slice(&request[at..]).unwrap_or(Value::Null);
    let mut line = head.lines().next().unwrap_or("").split(' ');
    let method = line.next().unwrap_or("");
    let target = line.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let (own, upstream) = {
        let mut s = state.lock().unwrap();
        (handle(&mut s, method, path, &body), s.upstream.clone())
    };
    let out = match own {
        Some(a) => a,
        None => match exchange(&upstream, &request).await {
            Some(a) => with_signer(&state, method, path, a),
            None => return,
        },
    };
    let _ = client.write_all(&out).await;
    let _ = client.shutdown().await;
}
