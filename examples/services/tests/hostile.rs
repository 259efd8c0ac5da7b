//! Hostile requests against a running gateway (`stack.sh up`: PostgreSQL, RabbitMQ,
//! `uniface-services serve --role all`, with a 1 MiB body limit, a 5 s request deadline and a
//! 2 s header deadline): bad credentials of every kind, bodies over the limit (refused before they
//! are read whole), decompression bombs and corrupt images, slow clients, malformed multipart and
//! JSON, subject ids that try to become paths or SQL, out-of-range parameters, a flood against
//! one key's rate and against the credential checks. Every case is answered with its documented
//! status in the one error shape; nothing is a 5xx but the documented 503s; no process panics;
//! the gateway's memory stays bounded through the flood.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Answer, Client, Stack};
use serde_json::json;

/// Every answer a case got, for the checks that hold for all of them.
#[derive(Default)]
struct Seen(Vec<(String, u16, serde_json::Value)>);

impl Seen {
    /// `a` must have status `want` and, as an error, the one error shape with `code`.
    fn expect(&mut self, case: &str, a: Answer, want: u16, code: Option<&str>) -> Answer {
        assert_eq!(a.status, want, "{case}: {}", a.body);
        if want >= 400 {
            let e = &a.body["error"];
            assert!(
                e["code"].is_string() && e["message"].is_string() && e["request_id"].is_string(),
                "{case}: not the error shape: {}",
                a.body
            );
            if let Some(code) = code {
                assert_eq!(e["code"], code, "{case}: {}", a.body);
            }
        }
        self.0.push((case.to_owned(), a.status, a.body.clone()));
        a
    }
}

fn jwt(secret: &[u8], claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Connect to the gateway's address.
fn connect(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// What the server sent until it closed the connection (or the read timed out).
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A PNG that declares `w`×`h` pixels in a few dozen bytes.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // a zlib stream of a few zero rows: decoding all of it would take w·h·3 bytes
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x60, 0x18, 0x05, 0x00, 0x00],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn hostile_requests_get_their_documented_answers() {
    let secrets = tempfile::tempdir().unwrap();
    let jwt_secret = secrets.path().join("jwt.secret");
    std::fs::write(&jwt_secret, b"another secret of thirty-two byte").unwrap();
    let images = secrets.path().join("images");
    let mut vars = common::service_vars(&images, &jwt_secret);
    vars.extend([
        ("UNIFACE_MAX_BODY", "1048576"),
        ("UNIFACE_TIMEOUT", "5"),
        ("UNIFACE_HEADER_TIMEOUT", "2"),
    ]);
    let stack = Stack::up(&[], &vars);
    let api = Client::new(stack.url());
    let admin = stack.admin().to_owned();
    let photo = common::shared().join("data/lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg");
    let jpeg = std::fs::read(&photo).unwrap();
    let mut seen = Seen::default();

    // --- credentials
    let get = |path: &str, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        api.call_with("GET", path, None, None, &headers).unwrap()
    };
    seen.expect(
        "no credentials",
        get("/v1/subjects", None),
        401,
        Some("unauthenticated"),
    );
    seen.expect(
        "basic auth",
        get("/v1/subjects", Some("Basic YWRtaW46YWRtaW4=")),
        401,
        Some("unauthenticated"),
    );
    seen.expect(
        "garbage bearer",
        get("/v1/subjects", Some("Bearer !!!not-a-token")),
        401,
        None,
    );
    let forged = format!("uf_{}_{}", "0123456789abcdef", "0".repeat(64));
    seen.expect("forged key", api.get("/v1/subjects", &forged), 401, None);
    let key_id = admin.split('_').nth(1).unwrap();
    let wrong_secret = format!("uf_{key_id}_{}", "f".repeat(64));
    seen.expect(
        "admin id, wrong secret",
        api.get("/v1/subjects", &wrong_secret),
        401,
        None,
    );
    let narrow = seen.expect(
        "make an enroll-only key",
        api.post_json(
            "/v1/admin/keys",
            &admin,
            &json!({"scopes": ["enroll"], "rate_per_s": 100, "burst": 100}),
        ),
        201,
        None,
    );
    let narrow_key = narrow.body["key"].as_str().unwrap().to_owned();
    seen.expect(
        "wrong scope",
        api.get("/v1/subjects", &narrow_key),
        403,
        Some("forbidden"),
    );
    seen.expect(
        "revoke it",
        api.call(
            "DELETE",
            &format!("/v1/admin/keys/{}", narrow.body["key_id"].as_str().unwrap()),
            Some(&admin),
            None,
        )
        .unwrap(),
        204,
        None,
    );
    seen.expect(
        "revoked key",
        api.get("/v1/subjects", &narrow_key),
        401,
        None,
    );
    let secret = std::fs::read(&jwt_secret).unwrap();
    let good = json!({"sub": "c", "iss": "uniface-test", "aud": "uniface", "exp": now() + 300, "scope": "manage"});
    seen.expect(
        "good JWT",
        api.get("/v1/subjects", &jwt(&secret, good.clone())),
        200,
        None,
    );
    for (case, claims) in [
        ("expired JWT", json!({"exp": now() - 600})),
        ("wrong audience", json!({"aud": "elsewhere"})),
        ("wrong issuer", json!({"iss": "someone"})),
        ("no expiry", json!({"exp": null})),
    ] {
        let mut c = good.clone();
        for (k, v) in claims.as_object().unwrap() {
            match v.is_null() {
                true => c.as_object_mut().unwrap().remove(k),
                false => c.as_object_mut().unwrap().insert(k.clone(), v.clone()),
            };
        }
        seen.expect(case, api.get("/v1/subjects", &jwt(&secret, c)), 401, None);
    }
    seen.expect(
        "JWT signed with another secret",
        api.get(
            "/v1/subjects",
            &jwt(b"not the deployment's secret at all", good.clone()),
        ),
        401,
        None,
    );
    // alg none: the header {"alg":"none","typ":"JWT"} on good claims, no signature
    let signed = jwt(&secret, good.clone());
    let claims_part = signed.split('.').nth(1).unwrap();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims_part}.");
    seen.expect("alg none", api.get("/v1/subjects", &unsigned), 401, None);
    let mut scopeless = good.clone();
    scopeless["scope"] = json!("verify");
    seen.expect(
        "JWT without the scope",
        api.get("/v1/subjects", &jwt(&secret, scopeless)),
        403,
        None,
    );

    // --- bodies over the limit: 413 from the declared length, without reading the body
    let mut s = connect(stack.url());
    let started = Instant::now();
    write!(
        s,
        "POST /v1/identify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: image/jpeg\r\nContent-Length: 209715200\r\n\r\n"
    )
    .unwrap();
    // (the server may answer and close before this is written)
    let _ = s.write_all(&[0u8; 65536]);
    let answer = read_all(&mut s);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "200 MB declared: {answer}"
    );
    assert!(answer.contains("\"too_large\""), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // chunked, no declared length: cut off at the limit
    let mut s = connect(stack.url());
    write!(
        s,
        "POST /v1/identify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = [0xffu8; 65536];
    for _ in 0..32 {
        if write!(s, "{:x}\r\n", chunk.len()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let answer = read_all(&mut s);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "2 MiB chunked: {answer}"
    );
    assert!(answer.contains("\"too_large\""), "{answer}");

    // --- images that are not what they say
    let post = |path: &str, ct: &str, body: &[u8]| {
        api.call("POST", path, Some(&admin), Some((ct, body)))
            .unwrap()
    };
    for (case, bytes) in [
        ("PNG declaring 30000×30000", png_declaring(30_000, 30_000)),
        ("PNG declaring 2^31×2^31", png_declaring(1 << 31, 1 << 31)),
        ("truncated JPEG", jpeg[..2048].to_vec()),
        (
            "random bytes",
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
    ] {
        seen.expect(case, post("/v1/identify", "image/jpeg", &bytes), 422, None);
        seen.expect(
            case,
            post("/v1/subjects/bomb/faces?policy=none", "image/png", &bytes),
            422,
            None,
        );
    }
    seen.expect(
        "empty body",
        post("/v1/identify", "image/jpeg", &[]),
        422,
        None,
    );
    seen.expect(
        "text/plain",
        post("/v1/identify", "text/plain", b"hello"),
        415,
        None,
    );
    seen.expect(
        "a template that is not one",
        post(
            "/v1/identify",
            "application/vnd.uniface.template",
            b"UFT?garbage",
        ),
        422,
        None,
    );

    // --- malformed multipart and JSON
    seen.expect(
        "multipart without its boundary",
        post("/v1/identify", "multipart/form-data", b"--x\r\n\r\n"),
        400,
        None,
    );
    seen.expect(
        "multipart garbage",
        post(
            "/v1/identify",
            "multipart/form-data; boundary=XyZ",
            b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nno end",
        ),
        400,
        None,
    );
    seen.expect(
        "multipart with no file",
        post(
            "/v1/identify",
            "multipart/form-data; boundary=XyZ",
            b"--XyZ--\r\n",
        ),
        400,
        None,
    );
    seen.expect(
        "JSON that is not",
        post(
            "/v1/admin/keys",
            "application/json",
            b"{\"scopes\": [\"enroll\"",
        ),
        400,
        None,
    );
    seen.expect(
        "JSON of the wrong type",
        post("/v1/admin/keys", "application/json", b"{\"scopes\": 7}"),
        422,
        None,
    );
    seen.expect(
        "unknown scope",
        post(
            "/v1/admin/keys",
            "application/json",
            b"{\"scopes\": [\"root\"]}",
        ),
        400,
        None,
    );

    // --- subject ids: never paths, never SQL, bounded
    for (case, raw, id) in [
        (
            "path separators",
            "..%2F..%2Fetc%2Fpasswd",
            "../../etc/passwd",
        ),
        (
            "SQL",
            "x%27%3B%20DROP%20TABLE%20subjects%3B%20--",
            "x'; DROP TABLE subjects; --",
        ),
        (
            "backslashes and dots",
            "..%5C..%5Cwin.ini",
            "..\\..\\win.ini",
        ),
        ("unicode", "%E6%9D%8E%E5%B0%8F%E9%BE%99", "李小龙"),
    ] {
        let a = seen.expect(
            case,
            post(
                &format!("/v1/subjects/{raw}/faces?policy=none&store_image=true"),
                "image/jpeg",
                &jpeg,
            ),
            201,
            None,
        );
        assert_eq!(a.body["subject"], id, "{case}");
        let back = seen.expect(
            case,
            api.get(&format!("/v1/subjects/{raw}"), &admin),
            200,
            None,
        );
        assert_eq!(back.body["subject"], id, "{case}: {}", back.body);
    }
    // nothing was written outside the image store, and inside it only hex names
    for entry in walk(&images) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_hexdigit() || b.is_ascii_digit() || b == b'.'),
            "{}",
            entry.display()
        );
    }
    assert!(!secrets.path().join("etc").exists());
    for (case, raw) in [
        ("NUL", "a%00b".to_owned()),
        ("newline", "a%0Ab".to_owned()),
        ("256 bytes", "a".repeat(256)),
        ("10 kB", "é".repeat(5000).replace('é', "%C3%A9")),
        ("not UTF-8", "%FF%FE".to_owned()),
    ] {
        let a = post(
            &format!("/v1/subjects/{raw}/faces?policy=none"),
            "image/jpeg",
            &jpeg,
        );
        seen.expect(case, a, 400, None);
    }
    // the database is whole after the SQL-looking id
    seen.expect(
        "listing",
        api.get("/v1/subjects?limit=10", &admin),
        200,
        None,
    );

    // --- parameters out of range
    for q in [
        "k=0",
        "k=101",
        "k=100000000000",
        "k=-1",
        "k=abc",
        "fpir=2",
        "fpir=0",
        "fmr=NaN",
        "fpir=0.1&fmr=0.1",
        "face=every",
    ] {
        let a = post(&format!("/v1/identify?{q}"), "image/jpeg", &jpeg);
        seen.expect(q, a, 400, None);
    }
    for q in [
        "limit=0",
        "limit=1001",
        "limit=-5",
        "limit=99999999999999999999",
        "cursor=%00",
    ] {
        seen.expect(q, api.get(&format!("/v1/subjects?{q}"), &admin), 400, None);
    }
    seen.expect(
        "verify without a subject",
        post("/v1/verify", "image/jpeg", &jpeg),
        400,
        None,
    );
    seen.expect(
        "unknown route",
        api.get("/v1/nothing", &admin),
        404,
        Some("not_found"),
    );
    seen.expect(
        "wrong method",
        api.call("PATCH", "/v1/identify", Some(&admin), None)
            .unwrap(),
        405,
        Some("method_not_allowed"),
    );
    seen.expect(
        "an Idempotency-Key with a space",
        api.call_with(
            "POST",
            "/v1/subjects/idem/faces?policy=none",
            Some(&admin),
            Some(("image/jpeg", &jpeg)),
            &[("Idempotency-Key", "a b")],
        )
        .unwrap(),
        400,
        None,
    );

    // --- collections (tenancy): a key sees its own collection's subjects, in every query
    let lfw = common::shared().join("data/lfw");
    let aaron = std::fs::read(lfw.join("Aaron_Peirsol/Aaron_Peirsol_0001.jpg")).unwrap();
    let aaron_again = std::fs::read(lfw.join("Aaron_Peirsol/Aaron_Peirsol_0003.jpg")).unwrap();
    let abel = std::fs::read(lfw.join("Abel_Pacheco/Abel_Pacheco_0001.jpg")).unwrap();
    let tenant_key = |seen: &mut Seen, collection: &str, scopes: &[&str]| {
        let made = seen.expect(
            &format!("a key of {collection}"),
            api.post_json(
                "/v1/admin/keys",
                &admin,
                &json!({"scopes": scopes, "rate_per_s": 1000, "burst": 1000, "collection": collection}),
            ),
            201,
            None,
        );
        assert_eq!(made.body["collection"], collection, "{}", made.body);
        made.body["key"].as_str().unwrap().to_owned()
    };
    let all_scopes = ["enroll", "verify", "identify", "manage"];
    let a = tenant_key(&mut seen, "tenant-a", &all_scopes);
    let b = tenant_key(&mut seen, "tenant-b", &all_scopes);
    let a_admin = tenant_key(&mut seen, "tenant-a", &["admin"]);
    let send = |key: &str, method: &str, path: &str, body: Option<&[u8]>| {
        api.call(method, path, Some(key), body.map(|b| ("image/jpeg", b)))
            .unwrap()
    };
    // the same subject id in both collections: two subjects, each its collection's
    let a_alice = seen.expect(
        "tenant-a enrolls alice",
        send(
            &a,
            "POST",
            "/v1/subjects/alice/faces?policy=none",
            Some(&aaron),
        ),
        201,
        None,
    );
    let a_face = a_alice.body["face_id"].as_i64().unwrap();
    seen.expect(
        "tenant-b enrolls its own alice (another person)",
        send(
            &b,
            "POST",
            "/v1/subjects/alice/faces?policy=none",
            Some(&abel),
        ),
        201,
        None,
    );
    seen.expect(
        "tenant-b enrolls bob",
        send(
            &b,
            "POST",
            "/v1/subjects/bob/faces?policy=none",
            Some(&abel),
        ),
        201,
        None,
    );
    // tenant-a identifies its alice; tenant-b, with the same photo, finds no one of tenant-a
    let identify = |key: &str| {
        send(
            key,
            "POST",
            "/v1/identify?face=largest&k=10",
            Some(&aaron_again),
        )
        .body["faces"][0]
            .clone()
    };
    common::eventually(60, "tenant-a's alice identified", || {
        identify(&a)["known"] == "alice"
    });
    common::eventually(60, "tenant-b's two subjects searchable", || {
        identify(&b)["candidates"].as_array().map_or(0, Vec::len) == 2
    });
    let a_found = identify(&a);
    assert_eq!(
        a_found["candidates"].as_array().unwrap().len(),
        1,
        "{a_found}"
    );
    let b_found = identify(&b);
    assert!(
        b_found["known"].is_null(),
        "tenant-b matched tenant-a's face: {b_found}"
    );
    for c in b_found["candidates"].as_array().unwrap() {
        assert!(
            c["subject"] == "alice" || c["subject"] == "bob",
            "{b_found}"
        );
        // tenant-b's alice is Abel Pacheco: far from Aaron Peirsol
        assert!(c["distance"].as_f64().unwrap() > 0.6, "{b_found}");
    }
    // reads, changes and verification of another collection's subject: as if it did not exist
    seen.expect(
        "tenant-b reads tenant-a's alice: its own",
        send(&b, "GET", "/v1/subjects/alice", None),
        200,
        None,
    );
    let b_alice = send(&b, "GET", "/v1/subjects/alice", None);
    let b_faces: Vec<i64> = b_alice.body["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["face_id"].as_i64().unwrap())
        .collect();
    assert!(!b_faces.contains(&a_face), "{}", b_alice.body);
    seen.expect(
        "tenant-a reads tenant-b's bob",
        send(&a, "GET", "/v1/subjects/bob", None),
        404,
        Some("not_found"),
    );
    seen.expect(
        "tenant-a verifies against tenant-b's bob",
        send(&a, "POST", "/v1/verify?subject=bob", Some(&abel)),
        404,
        Some("not_found"),
    );
    seen.expect(
        "tenant-b removes tenant-a's face by its id",
        send(
            &b,
            "DELETE",
            &format!("/v1/subjects/alice/faces/{a_face}"),
            None,
        ),
        404,
        Some("not_found"),
    );
    seen.expect(
        "tenant-a erases tenant-b's bob",
        send(&a, "DELETE", "/v1/subjects/bob", None),
        404,
        Some("not_found"),
    );
    seen.expect(
        "tenant-a sets tenant-b's bob's metadata",
        api.call(
            "PUT",
            "/v1/subjects/bob/metadata",
            Some(&a),
            Some(("application/json", b"{\"x\": 1}")),
        )
        .unwrap(),
        404,
        Some("not_found"),
    );
    let verified = seen.expect(
        "tenant-b verifies Aaron against its alice",
        send(
            &b,
            "POST",
            "/v1/verify?subject=alice&fmr=0.01",
            Some(&aaron_again),
        ),
        200,
        None,
    );
    assert_eq!(verified.body["match"], false, "{}", verified.body);
    let verified = seen.expect(
        "tenant-a verifies Aaron against its alice",
        send(
            &a,
            "POST",
            "/v1/verify?subject=alice&fmr=0.01",
            Some(&aaron_again),
        ),
        200,
        None,
    );
    assert_eq!(verified.body["match"], true, "{}", verified.body);
    // listings: each collection's own; the default collection sees neither
    let names = |key: &str| -> Vec<String> {
        let l = send(key, "GET", "/v1/subjects?limit=1000", None);
        assert_eq!(l.status, 200, "{}", l.body);
        l.body["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&a), ["alice"]);
    assert_eq!(names(&b), ["alice", "bob"]);
    let default_names = names(&admin);
    assert!(
        !default_names
            .iter()
            .any(|n| n == "alice" || n == "bob" || n.contains('\u{1f}')),
        "{default_names:?}"
    );
    let paged = send(&b, "GET", "/v1/subjects?limit=1&cursor=alice", None);
    assert_eq!(
        paged.body["subjects"][0]["subject"], "bob",
        "{}",
        paged.body
    );
    // the gateway's internal headers from outside are not believed
    let smuggled = api
        .call_with(
            "GET",
            "/v1/subjects?limit=1000",
            Some(&b),
            None,
            &[
                ("X-Uniface-Collection", "74656e616e742d61"),
                ("X-Uniface-Internal", "guess"),
            ],
        )
        .unwrap();
    let smuggled: Vec<&str> = smuggled.body["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        smuggled,
        ["alice", "bob"],
        "a smuggled collection header was believed"
    );
    // a collection's administrators: their own collection's keys only, no deployment audit
    seen.expect(
        "tenant-a's admin makes a key of tenant-b",
        api.post_json(
            "/v1/admin/keys",
            &a_admin,
            &json!({"scopes": ["identify"], "collection": "tenant-b"}),
        ),
        403,
        Some("forbidden"),
    );
    let own = seen.expect(
        "tenant-a's admin makes a key (of tenant-a)",
        api.post_json("/v1/admin/keys", &a_admin, &json!({"scopes": ["identify"]})),
        201,
        None,
    );
    assert_eq!(own.body["collection"], "tenant-a");
    let b_key_id = b.split('_').nth(1).unwrap().to_owned();
    seen.expect(
        "tenant-a's admin revokes tenant-b's key",
        api.call(
            "DELETE",
            &format!("/v1/admin/keys/{b_key_id}"),
            Some(&a_admin),
            None,
        )
        .unwrap(),
        404,
        Some("not_found"),
    );
    assert_eq!(send(&b, "GET", "/v1/subjects?limit=1", None).status, 200);
    seen.expect(
        "tenant-a's admin runs the deployment's audit",
        api.get("/v1/admin/audit", &a_admin),
        403,
        Some("forbidden"),
    );
    for bad in ["../x", "a b", "\u{1f}", &"x".repeat(65)] {
        seen.expect(
            &format!("a key of collection {bad:?}"),
            api.post_json(
                "/v1/admin/keys",
                &admin,
                &json!({"scopes": ["identify"], "collection": bad}),
            ),
            400,
            None,
        );
    }
    // a JWT's collection claim
    let mut in_a = good.clone();
    in_a["collection"] = json!("tenant-a");
    let token = jwt(&secret, in_a.clone());
    let l = seen.expect(
        "a JWT of tenant-a lists",
        api.get("/v1/subjects", &token),
        200,
        None,
    );
    assert_eq!(l.body["subjects"][0]["subject"], "alice", "{}", l.body);
    in_a["collection"] = json!("../etc");
    seen.expect(
        "a JWT with a collection that is not one",
        api.get("/v1/subjects", &jwt(&secret, in_a)),
        401,
        None,
    );
    // erasure stays in its collection: tenant-b's alice goes, tenant-a's stays
    seen.expect(
        "tenant-b erases its alice",
        send(&b, "DELETE", "/v1/subjects/alice", None),
        200,
        None,
    );
    seen.expect(
        "tenant-a's alice is still there",
        send(&a, "GET", "/v1/subjects/alice", None),
        200,
        None,
    );
    common::eventually(60, "the audit is clean over every collection", || {
        let r = api.get("/v1/admin/audit", &admin);
        r.status == 200 && r.body["clean"] == true
    });
    let audit = api.get("/v1/admin/audit", &admin);
    let collections: std::collections::BTreeSet<&str> = audit.body["replicas"][0]["report"]
        ["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["collection"].as_str().unwrap())
        .collect();
    assert!(
        collections.contains("tenant-a") && collections.contains("tenant-b"),
        "{}",
        audit.body
    );

    // --- slow clients: headers dribbled one byte every 300 ms are cut off after the 2 s header
    // deadline; a body dribbled slowly is answered 503 `timeout` after the 5 s request deadline
    let mut s = connect(stack.url());
    let started = Instant::now();
    let mut cut_off = false;
    for b in b"GET /v1/subjects HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*b]).is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let rest = read_all(&mut s);
    let waited = started.elapsed();
    assert!(
        cut_off || waited < Duration::from_secs(8),
        "a slow client held the connection {waited:?}: {rest}"
    );
    let mut s = connect(stack.url());
    let started = Instant::now();
    write!(
        s,
        "POST /v1/identify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: image/jpeg\r\nContent-Length: 10000\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    for _ in 0..40 {
        if s.write_all(&[0xff; 10]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        s.set_nonblocking(false).unwrap();
        if !answer.is_empty() {
            break;
        }
    }
    answer.push_str(&read_all(&mut s));
    assert!(answer.starts_with("HTTP/1.1 503"), "slow body: {answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(9),
        "{waited:?}"
    );

    // --- a flood: one key's rate holds; forged credentials by the thousand leave the
    // gateway's memory bounded
    let flooded = api.post_json(
        "/v1/admin/keys",
        &admin,
        &json!({"scopes": ["manage"], "rate_per_s": 2, "burst": 3}),
    );
    let flooded = seen.expect("make a slow key", flooded, 201, None);
    let slow_key = flooded.body["key"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let statuses: Vec<u16> = (0..40)
        .map(|_| api.get("/v1/subjects?limit=1", &slow_key).status)
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(ok + limited, statuses.len(), "{statuses:?}");
    // the burst, plus what the rate refills meanwhile
    assert!(
        ok as f64 <= 3.0 + 2.0 * elapsed + 1.0,
        "{ok} in {elapsed:.1} s"
    );
    assert!(
        limited as f64 >= statuses.len() as f64 - (3.0 + 2.0 * elapsed + 1.0),
        "{statuses:?} in {elapsed:.1} s"
    );
    let pid = std::fs::read_to_string(stack.dir.path().join("pids/all-0.pid")).unwrap();
    let before = rss_kib(&pid);
    // three rounds of 8000 forged requests from 8 clients (a quarter of them forged secrets
    // for the admin's real id, which cost argon2 checks of 19 MiB each until the id is refused
    // unhashed); while each check allocated its own argon2 memory this grew the gateway by 57
    // to 209 MiB (auth.rs: the hashers reuse theirs)
    let mut rss = vec![before];
    for round in 0..3u64 {
        let flood_started = Instant::now();
        let answered: Vec<u16> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8u64)
                .map(|w| {
                    let api = &api;
                    let key_id = key_id.to_owned();
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for i in 0..1000u64 {
                            // distinct forged ids, and forged secrets for the admin's real id
                            let n = round * 100_000_000 + w * 1_000_000 + i;
                            let token = match i % 4 {
                                0 => format!("uf_{key_id}_{n:064x}"),
                                _ => format!("uf_{n:016x}_{}", "0".repeat(64)),
                            };
                            out.push(api.get("/v1/subjects?limit=1", &token).status);
                        }
                        out
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        assert!(
            answered.iter().all(|&s| s == 401 || s == 429),
            "{:?}",
            &answered[..20]
        );
        rss.push(rss_kib(&pid));
        eprintln!(
            "flood round {round}: {} forged requests in {:.1} s, gateway RSS {} MiB",
            answered.len(),
            flood_started.elapsed().as_secs_f64(),
            rss.last().unwrap() / 1024
        );
    }
    eprintln!(
        "gateway RSS before the floods and after each (MiB): {:?}",
        rss.iter().map(|k| k / 1024).collect::<Vec<_>>()
    );
    assert!(
        rss[3] < before + 16 * 1024,
        "gateway RSS through the floods (KiB): {rss:?}"
    );
    // the real admin key still works (its failures aged out, or it was never hashed wrong)
    common::eventually(30, "the admin key works after the flood", || {
        api.get("/v1/subjects?limit=1", &admin).status == 200
    });

    // --- no request of all of these (the raw ones included) was answered 5xx but the slow
    // body's documented 503, and nobody panicked: read from the gateway's log of every request
    let log = std::fs::read_to_string(stack.dir.path().join("logs/all-0.log")).unwrap();
    assert!(!log.contains("panicked"), "{}", stack.log("all-0"));
    let answered_5xx: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" request status=5") && !l.contains(" request status=503"))
        .collect();
    assert!(answered_5xx.is_empty(), "{answered_5xx:#?}");
    let documented_503 = log
        .lines()
        .filter(|l| l.contains(" request status=503"))
        .count();
    assert_eq!(documented_503, 1, "only the slow body's deadline");
    assert!(
        log.contains(" request status=401"),
        "the log names statuses as this test reads them"
    );
    eprintln!(
        "hostile requests: {} cases answered as documented",
        seen.0.len()
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}
