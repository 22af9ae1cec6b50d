//! `madbase functions …` and `madbase secrets …`: clients of the running server's functions API
//! (`/functions/v1/_admin/`), at the configured address (`MADBASE_LISTEN`, or `--url`) with the
//! service_role key made from the configured JWT secret (or `--service-key`), so the
//! environment that starts MadBase deploys to it.
//!
//! The same [`Client`] uploads declared buckets' `objects_path` at start (`crate::seed_objects`).
//!
//! Invariants: one request per connection over plain HTTP/1.1 (`Connection: close`), answered
//! whole; a secret's value travels only in the request body, never in a URL or an output line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

pub const USAGE: &str = "\
    madbase functions deploy NAME FILE.wasm [--no-verify-jwt] [--allowed-hosts H1,H2]
    madbase functions list | versions NAME | delete NAME | rollback NAME [--version N]
    madbase secrets set NAME=VALUE... | list | unset NAME...
        (each with [--config FILE] [--url http://HOST:PORT] [--service-key KEY])";

/// Where the server is and the key it is driven with.
pub struct Client {
    /// `host:port`.
    pub authority: String,
    pub service_key: String,
}

/// Largest answer read back.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

impl Client {
    /// The client for `url` (`http://host:port`; no TLS).
    pub fn new(url: &str, service_key: String) -> Result<Client, String> {
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url {url:?}: only http:// URLs are supported"))?
            .trim_end_matches('/')
            .to_owned();
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("--url {url:?} is not http://HOST:PORT"));
        }
        Ok(Client { authority, service_key })
    }

    /// One request to the functions API (`/functions/v1/_admin/{path}`); the status and the body
    /// of the answer.
    pub fn request(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let path = format!("/functions/v1/_admin/{path}");
        self.send(method, &path, &[("Content-Type", content_type)], body, body.len() as u64)
    }

    /// One request to `path` with `headers` and `length` bytes of `body`, streamed from the
    /// reader; the status and the body of the answer (at most [`MAX_ANSWER`] bytes).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Read,
        length: u64,
    ) -> Result<(u16, Vec<u8>), String> {
        debug_assert!(path.starts_with('/'), "an origin-form target");
        let unreachable = |e: std::io::Error| format!("cannot reach MadBase at http://{}: {e}", self.authority);
        let mut stream = TcpStream::connect(&self.authority).map_err(unreachable)?;
        stream.set_read_timeout(Some(Duration::from_secs(300))).map_err(unreachable)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\napikey: {}\r\n",
            self.authority, self.service_key, self.service_key,
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {length}\r\nConnection: close\r\n\r\n"));
        stream.write_all(head.as_bytes()).map_err(unreachable)?;
        // A server may answer before it has read the whole body (a refused upload) and close:
        // its answer, when there is one, says more than the failed write.
        let sent = match std::io::copy(&mut body.take(length), &mut stream) {
            Ok(sent) if sent != length => return Err(format!("the body ended after {sent} of {length} bytes")),
            sent => sent,
        };
        let mut answer = Vec::new();
        let read = (&mut stream).take(MAX_ANSWER).read_to_end(&mut answer);
        let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Err(match sent.and(read) {
                Err(e) => unreachable(e),
                Ok(_) => "the server's answer has no head".to_owned(),
            });
        };
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("the server's answer has no status")?;
        let mut body = answer[split + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Ok((status, body))
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 || data.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[(end + 4 + size).min(data.len())..];
    }
    out
}

/// The answer as JSON when it is a success, else the server's message as the error.
fn expect(answer: (u16, Vec<u8>)) -> Result<Value, String> {
    let (status, body) = answer;
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        Ok(json)
    } else {
        let message = json.get("message").and_then(Value::as_str).map(str::to_owned);
        Err(format!("{status}: {}", message.unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())))
    }
}

/// `--flag value` and `--switch` options, by name.
type Flags = Vec<(String, Option<String>)>;

/// Splits `args` into positional arguments and the given `--flag value` / `--switch` options.
fn options(args: &[String], with_value: &[&str]) -> Result<(Vec<String>, Flags), String> {
    let (mut positional, mut flags) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some(flag) = arg.strip_prefix("--") {
            let value = if with_value.contains(&flag) {
                Some(it.next().ok_or_else(|| format!("--{flag} needs a value"))?.clone())
            } else {
                None
            };
            flags.push((flag.to_owned(), value));
        } else {
            positional.push(arg.clone());
        }
    }
    Ok((positional, flags))
}

/// `madbase functions …`.
pub fn functions(client: &Client, args: &[String]) -> Result<(), String> {
    let (positional, flags) = options(args, &["allowed-hosts", "version"])?;
    let flag = |name: &str| flags.iter().find(|(f, _)| f == name);
    if let Some((unknown, _)) =
        flags.iter().find(|(f, _)| !["no-verify-jwt", "allowed-hosts", "version"].contains(&f.as_str()))
    {
        return Err(format!("unknown option --{unknown}\n{USAGE}"));
    }
    match positional.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["deploy", name, file] => {
            let component = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            let mut query = Vec::new();
            if flag("no-verify-jwt").is_some() {
                query.push("verify_jwt=false".to_owned());
            }
            if let Some((_, Some(hosts))) = flag("allowed-hosts") {
                query.push(format!("allowed_outbound_hosts={hosts}"));
            }
            let path = if query.is_empty() {
                format!("functions/{name}")
            } else {
                format!("functions/{name}?{}", query.join("&"))
            };
            let answer = expect(client.request("POST", &path, "application/wasm", &component)?)?;
            println!(
                "Deployed {name} version {} ({} bytes, sha256 {})",
                answer["version"],
                answer["size"],
                answer["sha256"].as_str().unwrap_or("")
            );
            Ok(())
        }
        ["list"] => {
            let answer = expect(client.request("GET", "functions", "application/json", b"")?)?;
            println!("{:<32} {:>7} {:>10} {:>10}  SHA256", "NAME", "VERSION", "VERIFY_JWT", "SIZE");
            for f in answer.as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:>7} {:>10} {:>10}  {}",
                    f["name"].as_str().unwrap_or(""),
                    f["version"],
                    f["settings"]["verify_jwt"],
                    f["size"],
                    f["sha256"].as_str().unwrap_or("").get(..12).unwrap_or("")
                );
            }
            Ok(())
        }
        ["versions", name] => {
            let answer = expect(client.request("GET", &format!("functions/{name}"), "application/json", b"")?)?;
            println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
            Ok(())
        }
        ["delete", name] => {
            expect(client.request("DELETE", &format!("functions/{name}"), "application/json", b"")?)?;
            println!("Deleted {name}");
            Ok(())
        }
        ["rollback", name] => {
            let path = match flag("version") {
                Some((_, Some(version))) => format!("functions/{name}/rollback?version={version}"),
                _ => format!("functions/{name}/rollback"),
            };
            let answer = expect(client.request("POST", &path, "application/json", b"")?)?;
            println!("{name} now serves version {}", answer["version"]);
            Ok(())
        }
        _ => Err(format!("usage:\n{USAGE}")),
    }
}

/// `madbase secrets …`.
pub fn secrets(client: &Client, args: &[String]) -> Result<(), String> {
    let (positional, flags) = options(args, &[])?;
    if let Some((unknown, _)) = flags.first() {
        return Err(format!("unknown option --{unknown}\n{USAGE}"));
    }
    match positional.split_first() {
        Some((command, pairs)) if command == "set" && !pairs.is_empty() => {
            let mut secrets = Vec::new();
            for pair in pairs {
                let (name, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not NAME=VALUE"))?;
                secrets.push(serde_json::json!({ "name": name, "value": value }));
            }
            let body = serde_json::to_vec(&secrets).expect("JSON");
            expect(client.request("POST", "secrets", "application/json", &body)?)?;
            println!("Set {} secret(s)", secrets.len());
            Ok(())
        }
        Some((command, rest)) if command == "list" && rest.is_empty() => {
            let answer = expect(client.request("GET", "secrets", "application/json", b"")?)?;
            println!("{:<40}  DIGEST (SHA-256)", "NAME");
            for s in answer.as_array().into_iter().flatten() {
                println!("{:<40}  {}", s["name"].as_str().unwrap_or(""), s["digest"].as_str().unwrap_or(""));
            }
            Ok(())
        }
        Some((command, names)) if command == "unset" && !names.is_empty() => {
            let body = serde_json::to_vec(names).expect("JSON");
            let answer = expect(client.request("DELETE", "secrets", "application/json", &body)?)?;
            println!("Unset {}", answer["unset"]);
            Ok(())
        }
        _ => Err(format!("usage:\n{USAGE}")),
    }
}
