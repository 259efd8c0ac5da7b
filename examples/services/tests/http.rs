//! The deployment end to end over HTTP, on real servers started by `stack.sh up` (PostgreSQL,
//! RabbitMQ, `uniface-services serve --role all`) and real LFW photos from `../shared/data/lfw`:
//! authentication (401, 403, 429, revocation, JWT) and TLS; 50 people enrolled through the
//! gateway; held-out photos of 10 of them and 5 strangers identified exactly as the library
//! identifies them in this process; verification as the library decides; templates no gallery
//! holds refused; the outbox holding 20 enrollments (and a subject's metadata and erasure)
//! while RabbitMQ is down, the replicas catching up once it is back; 3 subjects
//! erased — gone from identification, from the database, from the image store and from the
//! replicas' gallery files;
//! the audit clean.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::{eventually, Client, Stack};
use serde_json::json;
use uniface::index::{Gallery, GalleryOptions, OpenOptions, OpenSet};
use uniface::{FaceAnalyzer, ModelFingerprint, ModelStore, Template};

/// (person, photo) of the people enrolled, the held-out photos of the first 10 of them, the
/// strangers, and more people for the outage drill — in LFW's name order, people whose photo
/// the library finds a face in.
struct People {
    enrolled: Vec<(String, PathBuf)>,
    held_out: Vec<(String, PathBuf)>,
    strangers: Vec<(String, PathBuf)>,
    during_outage: Vec<(String, PathBuf)>,
}

fn photos(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    v
}

fn people(has_face: impl Fn(&Path) -> bool) -> People {
    let lfw = common::shared().join("data/lfw");
    let mut names: Vec<String> = std::fs::read_dir(&lfw)
        .unwrap_or_else(|e| panic!("{}: {e} (set UNIFACE_SHARED_DIR)", lfw.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut p = People {
        enrolled: Vec::new(),
        held_out: Vec::new(),
        strangers: Vec::new(),
        during_outage: Vec::new(),
    };
    for n in names {
        let imgs = photos(&lfw.join(&n));
        if imgs.is_empty() || !has_face(&imgs[0]) {
            continue;
        }
        if p.held_out.len() < 10 {
            if imgs.len() >= 2 && has_face(&imgs[1]) {
                p.enrolled.push((n.clone(), imgs[0].clone()));
                p.held_out.push((n, imgs[1].clone()));
            }
        } else if p.enrolled.len() < 50 {
            p.enrolled.push((n, imgs[0].clone()));
        } else if p.strangers.len() < 5 {
            p.strangers.push((n, imgs[0].clone()));
        } else if p.during_outage.len() < 20 {
            p.during_outage.push((n, imgs[0].clone()));
        } else {
            break;
        }
    }
    assert_eq!(p.during_outage.len(), 20);
    p
}

/// The same photo through the library in this process: the template of its largest face.
struct Library {
    analyzer: FaceAnalyzer,
}

impl Library {
    fn template(&self, photo: &Path) -> Option<Template> {
        let img = uniface::core::image::load_rgb(photo).unwrap();
        self.analyzer
            .analyze_selected(&img)
            .unwrap()
            .map(|(f, _)| Template::new(ModelFingerprint::dlib_resnet_v1(), &f.embedding).unwrap())
    }
}

/// A process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The files under `dir` that contain `needle`.
fn found_in_files(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.path() {
                p if p.is_dir() => todo.push(p),
                p => out.push(p),
            }
        }
    }
    out
}

fn jwt(secret: &[u8], audience: &str, scope: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "test-client", "iss": "uniface-test", "aud": audience, "exp": exp, "scope": scope}),
        &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

/// One stack at a time: two on 2 cores would each take twice as long.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_deployment_end_to_end_over_http_in_one_process() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    scenario(false);
}

#[test]
fn the_deployment_end_to_end_over_http_one_process_per_role() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    scenario(true);
}

/// Whether every replica (1, or 2 when split) has applied `n` events and the stack is ready.
fn applied(r: &common::Answer, replicas: usize, n: u64) -> bool {
    let all = r.body["replicas"].as_array().cloned().unwrap_or_default();
    r.status == 200
        && all.len() == replicas
        && all
            .iter()
            .all(|x| x["status"]["events_applied"] == json!(n))
}

/// A number from each of the audit's replica reports (the replicas are full copies: each holds
/// every template).
fn audit_each(audit: &common::Answer, field: &str) -> Vec<u64> {
    audit.body["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report"][field].as_u64().unwrap())
        .collect()
}

fn scenario(split: bool) {
    let library = Library {
        analyzer: FaceAnalyzer::new(&ModelStore::from_env().unwrap().ensure().unwrap()).unwrap(),
    };
    let people = people(|p| library.template(p).is_some());
    let secrets = tempfile::tempdir().unwrap();
    let jwt_secret = secrets.path().join("jwt.secret");
    std::fs::write(&jwt_secret, b"a test secret of thirty-two bytes!").unwrap();
    let images = secrets.path().join("images");
    let vars = common::service_vars(&images, &jwt_secret);
    let stack = Stack::up(if split { &["--split"] } else { &[] }, &vars);
    let replicas = if split { 2 } else { 1 };
    let gallery_dirs: Vec<PathBuf> = (0..replicas)
        .map(|r| stack.dir.path().join(format!("replica-{r}/gallery")))
        .collect();
    let found_anywhere = |needle: &[u8]| -> Vec<PathBuf> {
        gallery_dirs
            .iter()
            .flat_map(|d| found_in_files(d, needle))
            .collect()
    };
    let api = Client::new(stack.url());
    let admin = stack.admin().to_owned();

    // --- authentication, scopes, rates
    let none = api.call("POST", "/v1/identify", None, None).unwrap();
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(none.body["error"]["code"], "unauthenticated");
    let request_id = none.body["error"]["request_id"].as_str().unwrap();
    assert!(!request_id.is_empty());
    assert_eq!(none.headers["x-request-id"], request_id);
    let forged = api.get("/v1/subjects", "uf_0123456789abcdef_00");
    assert_eq!(forged.status, 401);
    let made = api.post_json(
        "/v1/admin/keys",
        &admin,
        &json!({"scopes": ["enroll"], "rate_per_s": 0.2, "burst": 2, "description": "test"}),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let narrow = made.body["key"].as_str().unwrap().to_owned();
    let statuses: Vec<(u16, Option<String>)> = (0..3)
        .map(|_| {
            let a = api.get("/v1/subjects", &narrow);
            (a.status, a.headers.get("retry-after").cloned())
        })
        .collect();
    assert_eq!(statuses[0].0, 403, "{statuses:?}");
    assert_eq!(statuses[1].0, 403, "{statuses:?}");
    assert_eq!(statuses[2].0, 429, "{statuses:?}");
    let after: u64 = statuses[2].1.as_deref().unwrap().parse().unwrap();
    assert!((1..=5).contains(&after), "Retry-After {after}");
    let key_id = made.body["key_id"].as_str().unwrap();
    let revoked = api
        .call(
            "DELETE",
            &format!("/v1/admin/keys/{key_id}"),
            Some(&admin),
            None,
        )
        .unwrap();
    assert_eq!(revoked.status, 204);
    assert_eq!(api.get("/v1/subjects", &narrow).status, 401);
    // a JWT with the right issuer, audience and scopes; one for another audience; one
    // without the scope
    let secret = std::fs::read(&jwt_secret).unwrap();
    assert_eq!(
        api.get("/v1/subjects", &jwt(&secret, "uniface", "manage identify"))
            .status,
        200
    );
    assert_eq!(
        api.get("/v1/subjects", &jwt(&secret, "elsewhere", "manage"))
            .status,
        401
    );
    assert_eq!(
        api.get("/v1/subjects", &jwt(&secret, "uniface", "verify"))
            .status,
        403
    );

    // --- 50 people enrolled through the gateway, the same in a library gallery here
    let mine = tempfile::tempdir().unwrap();
    let reference = Gallery::create(mine.path(), &GalleryOptions::default()).unwrap();
    for (person, photo) in &people.enrolled {
        let a = api.post_image(
            &format!("/v1/subjects/{person}/faces?policy=none"),
            &admin,
            photo,
        );
        assert_eq!(a.status, 201, "{person}: {}", a.body);
        assert!(a.body["face_id"].as_i64().unwrap() > 0);
        reference
            .enroll(person, &library.template(photo).unwrap())
            .unwrap();
    }
    // the quality gate refuses a photo of several faces; a landscape has no face
    let photos = common::shared().join("data/photos");
    let group = api.post_image(
        "/v1/subjects/group/faces?policy=enrollment&liveness=false",
        &admin,
        &photos.join("group_6faces_insightface_t1.jpg"),
    );
    assert_eq!(group.status, 422, "{}", group.body);
    assert_eq!(
        group.body["error"]["code"], "several_faces",
        "{}",
        group.body
    );
    let landscape = api.post_image(
        "/v1/subjects/view/faces?policy=none",
        &admin,
        &photos.join("no_face_landscape_view.jpg"),
    );
    assert_eq!(
        landscape.body["error"]["code"], "no_face",
        "{}",
        landscape.body
    );
    let ready = |api: &Client| api.call("GET", "/readyz", None, None).unwrap();
    eventually(60, "the replicas apply the enrollments", || {
        applied(&ready(&api), replicas, 50)
    });

    // --- identification: held-out photos of 10 people, 5 strangers — as the library does
    let mut rank1 = 0;
    let mut unknown_strangers = 0;
    for (i, (person, photo)) in people.held_out.iter().chain(&people.strangers).enumerate() {
        let a = api.post_image("/v1/identify?face=largest&k=5&fpir=0.01", &admin, photo);
        assert_eq!(a.status, 200, "{}", a.body);
        let face = &a.body["faces"][0];
        let probe = library.template(photo).unwrap();
        let lib = reference.identify(&probe, 5, OpenSet::Fpir(0.01)).unwrap();
        assert_eq!(
            face["known"].as_str(),
            lib.known.as_deref(),
            "{person}: {face}"
        );
        let got: Vec<&str> = face["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["subject"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = lib.candidates.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(got, want, "{person}");
        let d = face["candidates"][0]["distance"].as_f64().unwrap();
        assert!((d - f64::from(lib.candidates[0].distance)).abs() < 1e-5);
        assert!((face["threshold"].as_f64().unwrap() - f64::from(lib.threshold)).abs() < 1e-6);
        if i < 10 {
            rank1 += usize::from(got[0] == person);
        } else {
            unknown_strangers += usize::from(face["known"].is_null());
        }
    }
    eprintln!(
        "identify over HTTP = library: rank-1 {rank1}/10 held-out photos, {unknown_strangers}/5 strangers unknown"
    );
    // what docs/DEPLOYMENT.md reports for these photos
    assert_eq!((rank1, unknown_strangers), (10, 5));

    // templates no gallery would hold are refused at the door (they would stop the replicas)
    let fp = ModelFingerprint::dlib_resnet_v1();
    for bad in [vec![0.1f32; 129], vec![2000.0f32; 128]] {
        let t = Template::new(fp.clone(), &bad).unwrap().to_bytes();
        let a = api
            .call(
                "POST",
                "/v1/subjects/odd/faces",
                Some(&admin),
                Some(("application/vnd.uniface.template", &t)),
            )
            .unwrap();
        assert_eq!(a.status, 422, "{}", a.body);
        assert_eq!(a.body["error"]["code"], "bad_template");
    }

    // --- verification: genuine and impostor claims, decided as the library decides
    for (i, (person, photo)) in people.held_out.iter().enumerate() {
        let other = &people.held_out[(i + 1) % 10].0;
        let probe = library.template(photo).unwrap();
        for claim in [person, other] {
            let a = api.post_image(
                &format!("/v1/verify?subject={claim}&fmr=0.0001"),
                &admin,
                photo,
            );
            assert_eq!(a.status, 200, "{}", a.body);
            let lib = reference.verify(claim, &probe, 1e-4).unwrap().unwrap();
            assert_eq!(a.body["match"], json!(lib.is_match), "{person} as {claim}");
            assert!((a.body["distance"].as_f64().unwrap() - f64::from(lib.distance)).abs() < 1e-5);
        }
    }
    let stranger = api.post_image("/v1/verify?subject=nobody", &admin, &people.strangers[0].1);
    assert_eq!(stranger.status, 404);

    // --- collections: a key of another collection enrolls and identifies in its own (through
    // the enrollment process and the replicas' per-collection galleries when split); the
    // default collection never sees it, nor it the default's 50 people
    let made = api.post_json(
        "/v1/admin/keys",
        &admin,
        &json!({"scopes": ["enroll", "identify", "manage"], "collection": "tenant-x", "rate_per_s": 100, "burst": 100}),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let tenant = made.body["key"].as_str().unwrap().to_owned();
    let (stranger_name, stranger_photo) = &people.strangers[0];
    let a = api.post_image(
        "/v1/subjects/only-here/faces?policy=none",
        &tenant,
        stranger_photo,
    );
    assert_eq!(a.status, 201, "{}", a.body);
    eventually(60, "the tenant's face is searchable", || {
        let a = api.post_image("/v1/identify?face=largest&k=5", &tenant, stranger_photo);
        a.status == 200 && a.body["faces"][0]["known"] == "only-here"
    });
    let a = api.post_image("/v1/identify?face=largest&k=5", &tenant, stranger_photo);
    let candidates = a.body["faces"][0]["candidates"].as_array().unwrap();
    assert_eq!(
        candidates.len(),
        1,
        "the tenant saw another collection: {}",
        a.body
    );
    let a = api.post_image("/v1/identify?face=largest&k=5", &admin, stranger_photo);
    assert!(
        a.body["faces"][0]["known"].is_null(),
        "{stranger_name}: {}",
        a.body
    );
    assert!(
        a.body["faces"][0]["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["subject"] != "only-here"),
        "{}",
        a.body
    );
    assert_eq!(api.get("/v1/subjects/only-here", &admin).status, 404);
    let listed = api.get("/v1/subjects", &tenant);
    assert_eq!(
        listed.body["subjects"],
        json!([{"subject": "only-here", "faces": 1}])
    );
    let gone = api
        .call("DELETE", "/v1/subjects/only-here", Some(&tenant), None)
        .unwrap();
    assert_eq!(gone.status, 200, "{}", gone.body);
    eventually(60, "the tenant's erasure reaches the replicas", || {
        let a = api.post_image("/v1/identify?face=largest&k=5", &tenant, stranger_photo);
        a.status == 200 && a.body["faces"][0]["candidates"] == json!([])
    });

    // a role process behind the gateway answers the gateway only, not an API key sent to it
    if split {
        let port = std::fs::read_to_string(stack.dir.path().join("ports/enrollment-0")).unwrap();
        let direct = Client::new(&format!("http://127.0.0.1:{}", port.trim()));
        let a = direct.post_image(
            "/v1/subjects/sneaky/faces?policy=none",
            &admin,
            &people.strangers[0].1,
        );
        assert_eq!(a.status, 403, "{}", a.body);
    }

    // --- TLS: a gateway with a certificate made here, trusted by this client only
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (
        secrets.path().join("tls.crt"),
        secrets.path().join("tls.key"),
    );
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let _tls = Running(
        Command::new(env!("CARGO_BIN_EXE_uniface-services"))
            .args(["serve", "--role", "gateway,templates", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tls-cert")
            .arg(&cert_pem)
            .arg("--tls-key")
            .arg(&key_pem)
            .env("UNIFACE_PG_URL", stack.pg_url())
            .env("UNIFACE_AMQP_URL", &stack.env["UNIFACE_AMQP_URL"])
            .env("UNIFACE_KEY_FILE", &stack.env["UNIFACE_KEY_FILE"])
            .stderr(std::fs::File::create(stack.dir.path().join("logs/tls.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let roots = vec![ureq::tls::Certificate::from_der(cert.cert.der()).to_owned()];
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
        .build();
    let https = Client::with_config(
        &format!("https://localhost:{port}"),
        ureq::Agent::config_builder().tls_config(tls),
    );
    eventually(30, "the TLS gateway answers", || {
        https
            .call("GET", "/readyz", None, None)
            .is_ok_and(|a| a.status == 200)
    });
    let listed = https.get("/v1/subjects?limit=1000", &admin);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["subjects"].as_array().unwrap().len(), 50);
    let plain = Client::new(&format!("http://localhost:{port}"));
    assert!(plain
        .call("GET", "/readyz", None, None)
        .map_or(true, |a| a.status != 200));

    // --- the outbox holds: RabbitMQ down, 20 enrollments acknowledged, all applied later
    stack.run("stop-rabbitmq", &[], &vars);
    for (person, photo) in &people.during_outage {
        let a = api.post_image(
            &format!("/v1/subjects/{person}/faces?policy=none"),
            &admin,
            photo,
        );
        assert_eq!(a.status, 201, "{person} while RabbitMQ is down: {}", a.body);
    }
    // and a subject given metadata, then erased, before any of it was sent: the replicas
    // skip what the erasure took out of the outbox
    let (gone, _) = &people.during_outage[0];
    let m = serde_json::to_vec(&json!({"note": "erased while the broker was down"})).unwrap();
    let a = api
        .call(
            "PUT",
            &format!("/v1/subjects/{gone}/metadata"),
            Some(&admin),
            Some(("application/json", &m)),
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let a = api
        .call(
            "DELETE",
            &format!("/v1/subjects/{gone}"),
            Some(&admin),
            None,
        )
        .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    eventually(30, "readyz reports the replica behind", || {
        ready(&api).status == 503
    });
    stack.run("up", &[], &vars);
    eventually(90, "the replicas catch up after the outage", || {
        // (tenant-x's enrollment and erasure among them)
        applied(&ready(&api), replicas, 74)
    });
    let audit = api.get("/v1/admin/audit", &admin);
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert_eq!(audit.body["clean"], json!(true), "{}", audit.body);
    assert_eq!(audit.body["replicas"].as_array().unwrap().len(), replicas);
    assert_eq!(audit_each(&audit, "replica_faces"), vec![69; replicas]);
    assert!(audit.body["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["report"]["database_faces"] == r["report"]["replica_faces"]));

    // --- erasure of 3 subjects: identification, the database, the replica's files
    let erased: Vec<&(String, PathBuf)> = people.held_out[..3].iter().collect();
    // a second face of the first, its photo kept (sealed: its bytes are not in the store)
    let (kept_for, kept_photo) = erased[0];
    let a = api.post_image(
        &format!("/v1/subjects/{kept_for}/faces?policy=none&store_image=true"),
        &admin,
        kept_photo,
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let jpeg = std::fs::read(kept_photo).unwrap();
    let stored: Vec<PathBuf> = walk(&images);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(found_in_files(&images, &jpeg[..64]).is_empty());
    for (person, _) in &erased {
        // the test of the test: the subject id is in the gallery's files before
        assert!(
            !found_anywhere(person.as_bytes()).is_empty(),
            "{person} not found in the gallery before its erasure"
        );
        let a = api
            .call(
                "DELETE",
                &format!("/v1/subjects/{person}"),
                Some(&admin),
                None,
            )
            .unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        let faces = if person == kept_for { 2 } else { 1 };
        assert_eq!(a.body["faces_removed"].as_array().unwrap().len(), faces);
    }
    eventually(60, "the replicas apply the erasures", || {
        applied(&ready(&api), replicas, 78)
    });
    for (person, photo) in &erased {
        let a = api.post_image("/v1/identify?face=largest&k=10", &admin, photo);
        let candidates = a.body["faces"][0]["candidates"].as_array().unwrap();
        assert!(
            candidates.iter().all(|c| c["subject"] != json!(person)),
            "{person} still identified: {}",
            a.body
        );
        assert_eq!(
            api.get(&format!("/v1/subjects/{person}"), &admin).status,
            404
        );
        let left = found_anywhere(person.as_bytes());
        assert!(left.is_empty(), "{person} still in {left:?}");
    }
    assert!(walk(&images).is_empty(), "images left: {:?}", walk(&images));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = uniface_services::db::connect(stack.pg_url()).await.unwrap();
        for (person, _) in &erased {
            let n: i64 = c
                .query_one(
                    "SELECT (SELECT count(*) FROM faces WHERE subject = $1)
                          + (SELECT count(*) FROM outbox WHERE subject = $1 AND payload IS NOT NULL)",
                    &[person],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "{person} left rows with templates in the database");
        }
    });
    // the replicas' own view, read from their files (read-only, under the key)
    let key: std::sync::Arc<dyn uniface::core::crypto::KeyProvider> = std::sync::Arc::new(
        uniface::core::crypto::KeyFile::new(&stack.env["UNIFACE_KEY_FILE"]),
    );
    for dir in &gallery_dirs {
        let (replica, _) = Gallery::open_with_options(
            dir,
            &ModelFingerprint::dlib_resnet_v1(),
            &OpenOptions {
                key: Some(key.clone()),
                ..OpenOptions::read_only()
            },
        )
        .unwrap();
        assert_eq!(replica.len(), 66, "{}", dir.display());
        for (person, _) in &erased {
            assert!(replica.get(person).is_none());
        }
    }
    let audit = api.get("/v1/admin/audit", &admin);
    assert_eq!(audit.body["clean"], json!(true), "{}", audit.body);
    assert_eq!(audit_each(&audit, "database_faces"), vec![66; replicas]);
    assert_eq!(audit_each(&audit, "replica_faces"), vec![66; replicas]);
    // nothing was set aside on the way
    let r = ready(&api);
    assert!(r.body["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["status"]["dead_lettered"] == json!(0)));

    // --- failover: a replica killed, identification goes on from the other copy at once (the
    // call that finds it dead is repeated there), the gateway stays ready; an enrollment made
    // meanwhile reaches it once `up` has restarted it
    if split {
        let pid_file = stack.dir.path().join("pids/identification-0.pid");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let killed = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(killed.success());
        for (person, photo) in &people.held_out[3..] {
            let a = api.post_image("/v1/identify?face=largest&k=5&fpir=0.01", &admin, photo);
            assert_eq!(a.status, 200, "{person} with a replica down: {}", a.body);
            assert_eq!(a.body["faces"][0]["known"].as_str(), Some(person.as_str()));
        }
        let r = ready(&api);
        assert_eq!(r.status, 200, "one copy is enough: {}", r.body);
        let down: Vec<&serde_json::Value> = r.body["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["health"] == "down")
            .collect();
        assert_eq!(down.len(), 1, "{}", r.body);
        // an enrollment while it is down waits in its queue
        let (late, photo) = &people.strangers[0];
        let a = api.post_image(
            &format!("/v1/subjects/{late}/faces?policy=none"),
            &admin,
            photo,
        );
        assert_eq!(a.status, 201, "{}", a.body);
        stack.run("up", &[], &vars);
        eventually(60, "the restarted replica is back and caught up", || {
            let r = ready(&api);
            r.status == 200
                && r.body["upstreams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|u| u["health"] == "ready")
        });
        eventually(30, "both copies hold the enrollment made meanwhile", || {
            let audit = api.get("/v1/admin/audit", &admin);
            audit.body["clean"] == json!(true)
                && audit_each(&audit, "replica_faces") == vec![67; replicas]
        });
    }

    // --- idempotency keys: a retried enrollment gets the first answer, never a second face
    let (person, photo) = &people.strangers[1];
    let bytes = std::fs::read(photo).unwrap();
    let path = format!("/v1/subjects/{person}/faces?policy=none");
    let enroll_with = |key: &str, path: &str| {
        api.call_with(
            "POST",
            path,
            Some(&admin),
            Some(("image/jpeg", &bytes)),
            &[("Idempotency-Key", key)],
        )
        .unwrap()
    };
    let first = enroll_with("retry-1", &path);
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let again = enroll_with("retry-1", &path);
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.body["face_id"], first.body["face_id"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    // the same key for another request is refused; a malformed key too
    let other = enroll_with(
        "retry-1",
        &format!("/v1/subjects/{person}-2/faces?policy=none"),
    );
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(other.body["error"]["code"], "idempotency_key_reused");
    let long = "k".repeat(256);
    assert_eq!(enroll_with(&long, &path).status, 400);
    // concurrent duplicates: one face, one answer
    let (twin, twin_photo) = &people.strangers[2];
    let twin_bytes = std::fs::read(twin_photo).unwrap();
    let twin_path = format!("/v1/subjects/{twin}/faces?policy=none");
    let answers: Vec<common::Answer> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    api.call_with(
                        "POST",
                        &twin_path,
                        Some(&admin),
                        Some(("image/jpeg", &twin_bytes)),
                        &[("Idempotency-Key", "twin")],
                    )
                    .unwrap()
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for a in &answers {
        assert_eq!(a.status, 201, "{}", a.body);
        assert_eq!(a.body["face_id"], answers[0].body["face_id"]);
    }
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = uniface_services::db::connect(stack.pg_url()).await.unwrap();
        for who in [person, twin] {
            let n: i64 = client
                .query_one("SELECT count(*) FROM faces WHERE subject = $1", &[who])
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 1, "{who}: one face, whatever the retries");
        }
    });
}
