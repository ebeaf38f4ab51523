//! HTTP/1.1 handling: malformed and oversized input, framing, pipelining,
//! connection lifecycle, idle timeout and the per-shard connection cap.
mod common;

use common::*;
use serde_json::json;
use std::io::{ErrorKind, Write};
use std::thread::sleep;
use std::time::Duration;

/// Fresh connection, write `bytes` (a write error is tolerated: the server may
/// answer and close before reading everything), read one response.
#[track_caller]
fn exchange(s: &Server, bytes: &[u8], what: &str) -> Response {
    let mut c = s.raw_connect();
    let _ = c.stream.write_all(bytes);
    c.expect_response(what)
}

#[track_caller]
fn assert_protocol_error(s: &Server, r: &Response, status: u16, code: &str, what: &str) {
    assert_eq!(
        r.status, status,
        "{what}: expected {status} {code}, got {r}"
    );
    assert_error(r, status, code);
    assert_shard_header(r, s.shards);
}

#[test]
fn malformed_requests_get_400_and_server_stays_healthy() {
    let s = Server::start(1, &[]);
    let cases: [(&str, &[u8]); 9] = [
        ("garbage request line", b"GARBAGE\r\n\r\n"),
        ("method only", b"GET\r\n\r\n"),
        ("bad version", b"GET /healthz HTTX/1.1\r\nHost: x\r\n\r\n"),
        ("header without colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"),
        ("space in header name", b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n"),
        ("binary junk", b"\x00\x01\x02\x03 \xff\xfe\r\n\r\n"),
        (
            "non-numeric Content-Length",
            b"PUT /v1/sales/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        ),
        (
            "negative Content-Length",
            b"PUT /v1/sales/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        ),
        (
            "conflicting Content-Length",
            b"POST /v1/sales/x/purchase HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        ),
    ];
    for (what, bytes) in cases {
        let r = exchange(&s, bytes, what);
        assert_protocol_error(&s, &r, 400, "bad_request", what);
        s.assert_healthy();
    }
}

#[test]
fn oversized_header_section_gets_431() {
    let s = Server::start(1, &[]);
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    let r = exchange(&s, big.as_bytes(), "17 KiB header");
    assert_protocol_error(&s, &r, 431, "headers_too_large", "17 KiB header");
    s.assert_healthy();

    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(90)));
    }
    many.push_str("\r\n");
    assert!(many.len() > 16 * 1024);
    let r = exchange(&s, many.as_bytes(), "200 headers");
    assert_protocol_error(
        &s,
        &r,
        431,
        "headers_too_large",
        "200 headers totalling > 16 KiB",
    );
    s.assert_healthy();

    // Without the final blank line the server cannot wait for more forever.
    let unterminated = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}",
        "c".repeat(20 * 1024)
    );
    let r = exchange(&s, unterminated.as_bytes(), "unterminated 20 KiB header");
    assert_protocol_error(
        &s,
        &r,
        431,
        "headers_too_large",
        "unterminated 20 KiB header",
    );
    s.assert_healthy();

    // Just under the limit is fine.
    let mut c = s.client();
    let value = "d".repeat(15 * 1024);
    let r = c.request("GET", "/healthz", &[("X-Big", &value)], None);
    assert_eq!(r.status, 200, "15 KiB header section must be accepted: {r}");
}

#[test]
fn oversized_body_gets_413_and_limit_size_is_accepted() {
    let s = Server::start(1, &[]);
    let admin = admin_bearer();
    for len in [65_537u64, 10_000_000] {
        let head = format!(
            "PUT /v1/sales/big HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        );
        let what = format!("Content-Length {len}");
        let r = exchange(&s, head.as_bytes(), &what);
        assert_protocol_error(&s, &r, 413, "payload_too_large", &what);
        s.assert_healthy();
    }
    let mut c = s.client();
    assert_error(&c.get("/v1/sales/big"), 404, "unknown_sale");

    // Exactly 65536 bytes (JSON padded with whitespace) is allowed.
    let mut body = sale_spec(5, 1).to_string();
    body.push_str(&" ".repeat(65_536 - body.len()));
    assert_eq!(body.len(), 65_536);
    let r = c.admin("PUT", "/v1/sales/big", Some(&body));
    assert_eq!(r.status, 201, "a 65536-byte body must be accepted: {r}");
    assert_eq!(c.get_sale("big")["stock"], json!(5));
}

#[test]
fn chunked_and_missing_length_get_411() {
    let s = Server::start(1, &[]);
    s.open_sale("te", 5, 1);
    let token = tok("alice");
    let admin = admin_bearer();

    let req = format!(
        "POST /v1/sales/te/purchase HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    let r = exchange(&s, req.as_bytes(), "chunked purchase");
    assert_protocol_error(&s, &r, 411, "length_required", "chunked purchase");
    s.assert_healthy();

    let body = sale_spec(5, 1).to_string();
    let req = format!(
        "PUT /v1/sales/te2 HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let r = exchange(&s, req.as_bytes(), "chunked PUT sale");
    assert_protocol_error(&s, &r, 411, "length_required", "chunked PUT sale");
    s.assert_healthy();

    let req = format!("PUT /v1/sales/te3 HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\nContent-Type: application/json\r\n\r\n");
    let r = exchange(&s, req.as_bytes(), "PUT sale without Content-Length");
    assert_protocol_error(
        &s,
        &r,
        411,
        "length_required",
        "PUT sale without Content-Length",
    );
    s.assert_healthy();

    let mut c = s.client();
    assert_eq!(
        c.remaining("te"),
        5,
        "the chunked purchase must not have been processed"
    );
    assert_error(&c.get("/v1/sales/te2"), 404, "unknown_sale");
    assert_error(&c.get("/v1/sales/te3"), 404, "unknown_sale");
}

#[test]
fn non_json_content_type_gets_415() {
    let s = Server::start(1, &[]);
    let mut c = s.client();
    let admin = admin_bearer();
    let body = sale_spec(5, 1).to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let r = c.request(
            "PUT",
            "/v1/sales/ct",
            &[("Authorization", &admin), ("Content-Type", ct)],
            Some(&body),
        );
        assert_protocol_error(&s, &r, 415, "unsupported_media_type", ct);
        s.assert_healthy();
    }
    c = s.client();
    assert_error(&c.get("/v1/sales/ct"), 404, "unknown_sale");

    let r = c.request(
        "PUT",
        "/v1/sales/ct",
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        Some(&body),
    );
    assert_eq!(
        r.status, 201,
        "application/json with a charset parameter is JSON: {r}"
    );

    // No Content-Type at all is accepted.
    let raw = format!(
        "PUT /v1/sales/ct-none HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = exchange(&s, raw.as_bytes(), "PUT without Content-Type");
    assert_eq!(
        r.status, 201,
        "a body without Content-Type is accepted: {r}"
    );

    let auth = format!("Bearer {}", tok("alice"));
    let r = c.request(
        "POST",
        "/v1/sales/ct/purchase",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        Some(r#"{"quantity": 1}"#),
    );
    c = s.client();
    assert_protocol_error(
        &s,
        &r,
        415,
        "unsupported_media_type",
        "purchase as text/plain",
    );
    assert_eq!(c.remaining("ct"), 5);

    let r = c.request(
        "POST",
        "/v1/sales/ct/purchase",
        &[("Authorization", &auth)],
        Some("{"),
    );
    assert_protocol_error(&s, &r, 400, "bad_request", "purchase with bad JSON");
    s.assert_healthy();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start(1, &[]);
    let mut c = s.raw_connect();
    let admin = admin_bearer();
    let token = tok("alice");
    let auth = format!("Bearer {token}");
    let body = sale_spec(7, 1).to_string();
    let mut batch = Vec::new();
    batch.extend(c.build_request("GET", "/healthz", &[], None));
    batch.extend(c.build_request("GET", "/v1/sales/pipe", &[], None));
    batch.extend(c.build_request(
        "PUT",
        "/v1/sales/pipe",
        &[("Authorization", &admin)],
        Some(&body),
    ));
    batch.extend(c.build_request("GET", "/v1/sales/pipe", &[], None));
    batch.extend(c.build_request("GET", "/nope", &[], None));
    batch.extend(c.build_request(
        "POST",
        "/v1/sales/pipe/purchase",
        &[("Authorization", &auth)],
        Some(""),
    ));
    batch.extend(c.build_request("GET", "/v1/sales", &[], None));
    c.send_raw(&batch);

    let r = c.expect_response("pipelined #1 GET /healthz");
    assert_eq!(r.status, 200, "#1: {r}");
    let r = c.expect_response("pipelined #2 GET missing sale");
    assert_error(&r, 404, "unknown_sale");
    let r = c.expect_response("pipelined #3 PUT sale");
    assert_eq!(r.status, 201, "#3: {r}");
    assert_eq!(r.json()["remaining"], json!(7), "#3: {r}");
    let r = c.expect_response("pipelined #4 GET sale");
    assert_eq!(r.status, 200, "#4: {r}");
    assert_eq!(r.json()["sku"], json!("pipe"), "#4: {r}");
    assert_eq!(r.json()["remaining"], json!(7), "#4: {r}");
    let r = c.expect_response("pipelined #5 GET /nope");
    assert_error(&r, 404, "not_found");
    let r = c.expect_response("pipelined #6 purchase");
    assert_eq!(r.status, 201, "#6: {r}");
    assert_eq!(r.json()["user_id"], json!("alice"), "#6: {r}");
    let r = c.expect_response("pipelined #7 list");
    assert_eq!(r.status, 200, "#7: {r}");
    assert_eq!(r.json()["sales"][0]["remaining"], json!(6), "#7: {r}");

    // A larger burst: 100 alternating requests in one write.
    let mut batch = Vec::new();
    for i in 0..100 {
        let path = if i % 2 == 0 {
            "/healthz"
        } else {
            "/v1/sales/pipe"
        };
        batch.extend(c.build_request("GET", path, &[], None));
    }
    c.send_raw(&batch);
    for i in 0..100 {
        let r = c.expect_response(&format!("burst response {i}"));
        assert_eq!(r.status, 200, "burst #{i}: {r}");
        let has_sku = r.json().get("sku").is_some();
        assert_eq!(has_sku, i % 2 == 1, "burst #{i} answered out of order: {r}");
    }

    // Keep-alive by default: the same connection keeps working.
    for _ in 0..20 {
        let r = c.request("GET", "/healthz", &[], None);
        assert_eq!(r.status, 200, "{r}");
    }
}

#[test]
fn split_writes_are_reassembled() {
    let s = Server::start(1, &[]);
    let mut c = s.raw_connect();
    let body = sale_spec(3, 1).to_string();
    let req = c.build_request(
        "PUT",
        "/v1/sales/split",
        &[("Authorization", &admin_bearer())],
        Some(&body),
    );
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let cuts = [0, 3, 20, head_end - 2, head_end, head_end + 5, req.len()];
    for w in cuts.windows(2) {
        c.send_raw(&req[w[0]..w[1]]);
        sleep(Duration::from_millis(50));
    }
    let r = c.expect_response("split PUT");
    assert_eq!(r.status, 201, "request delivered in pieces: {r}");
    let r = c.request("GET", "/v1/sales/split", &[], None);
    assert_eq!(r.status, 200, "{r}");

    // A client that disconnects in the middle of a body does not hurt anyone.
    let mut d = s.raw_connect();
    let partial = format!(
        "PUT /v1/sales/half HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        admin_bearer()
    );
    d.send_raw(partial.as_bytes());
    drop(d);
    s.assert_healthy();
    assert_error(&c.get("/v1/sales/half"), 404, "unknown_sale");
}

/// After a `Connection: close` response the server closes, and sends nothing more.
fn assert_closed_with_nothing_more(c: &mut Client) {
    let rest = c
        .wait_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("Connection: close must close after the response: {e}"));
    assert!(
        rest.is_empty(),
        "no bytes may follow the Connection: close response: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn connection_close_and_http10_close_after_response() {
    let s = Server::start(1, &[]);

    let mut c = s.raw_connect();
    let r = c.request("GET", "/healthz", &[("Connection", "close")], None);
    assert_eq!(r.status, 200, "{r}");
    assert_closed_with_nothing_more(&mut c);

    // A request pipelined after the closing one is not answered.
    let mut c = s.raw_connect();
    let mut batch = c.build_request("GET", "/healthz", &[("Connection", "close")], None);
    batch.extend(c.build_request("GET", "/v1/sales", &[], None));
    c.send_raw(&batch);
    let r = c.expect_response("first of two pipelined, Connection: close");
    assert_eq!(r.status, 200, "{r}");
    assert_closed_with_nothing_more(&mut c);

    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut c = s.raw_connect();
    c.send_raw(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.expect_response("HTTP/1.0 GET /healthz");
    assert_eq!(r.status, 200, "{r}");
    assert_shard_header(&r, 1);
    c.wait_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("HTTP/1.0 request without keep-alive must be closed: {e}"));

    let mut c = s.raw_connect();
    c.send_raw(b"GET /v1/sales/none HTTP/1.0\r\n\r\n");
    let r = c.expect_response("HTTP/1.0 GET missing sale");
    assert_error(&r, 404, "unknown_sale");

    s.assert_healthy();
}

#[test]
fn idle_connections_are_closed() {
    let s = Server::start(1, &["--idle-timeout-ms", "300"]);

    let mut used = s.client();
    let r = used.get("/healthz");
    assert_eq!(r.status, 200, "{r}");
    used.wait_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("idle used connection: {e}"));

    let mut fresh = s.raw_connect();
    fresh
        .wait_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connection that never sent anything: {e}"));

    let mut partial = s.raw_connect();
    partial.send_raw(b"GET /heal");
    partial
        .wait_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connection stuck in a partial request: {e}"));

    // Authenticated, so the body is awaited (an unauthenticated one is refused at once).
    let mut partial_body = s.raw_connect();
    let head = format!(
        "PUT /v1/sales/x HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 10\r\n\r\n{{",
        admin_bearer()
    );
    partial_body.send_raw(head.as_bytes());
    partial_body
        .wait_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connection stuck in a partial body: {e}"));

    s.assert_healthy();
}

/// On a connection beyond the cap the server may answer right away or only
/// after a request arrives: wait a little for unsolicited bytes, else send one.
fn over_cap_response(c: &mut Client) -> Response {
    c.stream
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut probe = [0u8; 1];
    let got_unsolicited = match c.stream.peek(&mut probe) {
        Ok(n) => n > 0,
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => false,
        Err(_) => true, // reset: let read_response report it
    };
    c.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    if !got_unsolicited {
        let req = c.build_request("GET", "/healthz", &[], None);
        let _ = c.stream.write_all(&req);
    }
    c.expect_response("connection over the cap")
}

/// Open a used connection, retrying while the server still counts recently
/// closed connections (up to 10 s).
#[track_caller]
fn admitted_connection(s: &Server) -> Client {
    let mut last = None;
    poll(Duration::from_secs(10), || {
        let mut c = s.client();
        match c.try_request("GET", "/healthz", &[], None) {
            Ok(r) if r.status == 200 => Some(c),
            Ok(r) => {
                last = Some(r.to_string());
                None
            }
            Err(e) => {
                last = Some(e.to_string());
                None
            }
        }
    })
    .unwrap_or_else(|| panic!("no connection admitted within 10 s; last: {last:?}"))
}

#[test]
fn connections_over_the_cap_get_503() {
    let s = Server::start(1, &["--max-connections-per-shard", "4"]);
    let mut held: Vec<Client> = (0..4).map(|_| admitted_connection(&s)).collect();

    let mut extra = s.raw_connect();
    let r = over_cap_response(&mut extra);
    assert_protocol_error(&s, &r, 503, "overloaded", "5th connection with 4 held");
    extra
        .wait_closed(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("the 503'd connection must be closed: {e}"));

    // The held connections are unaffected.
    for (i, c) in held.iter_mut().enumerate() {
        let r = c.request("GET", "/healthz", &[], None);
        assert_eq!(r.status, 200, "held connection {i}: {r}");
    }

    // Closing one frees a slot (eventually), and the cap still holds after.
    drop(held.pop());
    held.push(admitted_connection(&s));
    let mut extra = s.raw_connect();
    let r = over_cap_response(&mut extra);
    assert_protocol_error(
        &s,
        &r,
        503,
        "overloaded",
        "5th connection after a slot was reused",
    );
    drop(extra);

    drop(held);
    // Once the server notices the closes, fresh clients are served again.
    let mut c = admitted_connection(&s);
    assert_eq!(c.get("/healthz").status, 200);
}

#[test]
fn many_short_connections_do_not_leak() {
    // With a small cap, 200 open/close cycles only work if closed connections
    // are released.
    let s = Server::start(1, &["--max-connections-per-shard", "8"]);
    for i in 0..200 {
        let mut c = admitted_connection(&s);
        if i % 2 == 0 {
            let r = c.request("GET", "/healthz", &[("Connection", "close")], None);
            assert_eq!(r.status, 200, "{r}");
        } else {
            // Abrupt close with an unfinished request.
            c.send_raw(b"GET /v1/sa");
        }
    }
    let held: Vec<Client> = (0..8).map(|_| admitted_connection(&s)).collect();
    assert_eq!(held.len(), 8);
    drop(held);
    // Released slots are reusable once the server notices the closes.
    admitted_connection(&s);
}

/// A request trickled in one byte at a time, each byte inside the idle timeout, is still cut off
/// once the whole request has taken longer than the timeout (slowloris).
#[test]
fn trickled_request_is_cut_off_with_408() {
    let s = Server::start(1, &["--idle-timeout-ms", "1000"]);
    let mut c = s.raw_connect();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut answered = None;
    for byte in request.iter() {
        if c.stream.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        c.stream.set_nonblocking(true).expect("nonblocking");
        let mut peek = [0u8; 1];
        let ready = c.stream.peek(&mut peek).is_ok_and(|n| n > 0);
        c.stream.set_nonblocking(false).expect("blocking");
        if ready {
            answered = Some(c.expect_response("answer to a trickled request"));
            break;
        }
    }
    let response = answered.expect("the server must not wait for a trickled request forever");
    assert_error(&response, 408, "request_timeout");
    s.assert_healthy();
}

#[test]
fn many_pipelined_requests_with_large_answers_are_all_answered_in_order() {
    let s = Server::start(1, &[]);
    let mut admin = s.client();
    // Sales with long names, so each answer is several times its request. (Single sales, not
    // the sale list: listing is rate limited per shard, and this test is about pipelining.)
    let skus: Vec<String> = (0..20).map(|n| format!("big-{n:02}")).collect();
    let mut expected = Vec::new();
    for sku in &skus {
        let mut spec = sale_spec(1_000, 1);
        spec["name"] = json!(format!("{sku} {}", "x".repeat(190)));
        admin.create_sale(sku, &spec);
        let body = admin.get(&format!("/v1/sales/{sku}")).body;
        assert!(body.len() > 300, "a large answer");
        expected.push(body);
    }
    // About 8 KiB of requests per read, whose answers are over the output bound.
    let mut c = s.raw_connect();
    let requests: Vec<u8> = (0..600)
        .flat_map(|n| c.build_request("GET", &format!("/v1/sales/{}", skus[n % 20]), &[], None))
        .collect();
    c.send_raw(&requests);
    for n in 0..600 {
        let r = c.expect_response(&format!("pipelined GET #{n}"));
        assert_eq!(r.status, 200, "#{n}: {r}");
        assert_eq!(r.body, expected[n % 20], "#{n} differs");
    }
    assert_eq!(c.get("/healthz").status, 200);
}
