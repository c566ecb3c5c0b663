//! The HTTP side: an accept loop serving each connection with hyper (so a
//! fault can close a connection without answering), and the routes of the
//! Table API and the token endpoint.

use std::collections::HashMap;
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::faults::{self, Fault, RATE_LIMIT_RULE, RateDecision};
use super::query;
use super::store::{self, SYSTEM_FIELDS, Table};
use super::{
    Caller, DEFAULT_LIMIT, DROPPED, InvalidQueries, LoggedRequest, PageInfo, Simulator, lock,
};

type Reply = Response<Full<Bytes>>;

/// Returned from the service to make hyper close the connection unanswered.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

pub(crate) async fn serve(listener: tokio::net::TcpListener, sim: Simulator) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, say: back off rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sim = sim.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sim = sim.clone();
                async move { handle(&sim, request).await }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// What a route needs of the request.
struct Call {
    method: Method,
    path: String,
    raw_query: String,
    params: Vec<(String, String)>,
    authorization: Option<String>,
    body: Bytes,
}

impl Call {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn handle(sim: &Simulator, request: hyper::Request<Incoming>) -> Result<Reply, Dropped> {
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let mut call = Call {
        method: request.method().clone(),
        path: request.uri().path().to_string(),
        params: url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        raw_query,
        authorization: request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: Bytes::new(),
    };
    call.body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();

    let fault = {
        let mut faults = lock(&sim.inner.faults);
        match faults.front() {
            Some(Fault::ForMethod(method, _)) if method != call.method.as_str() => None,
            _ => faults.pop_front(),
        }
    };
    let fault = match fault {
        Some(Fault::ForMethod(_, inner)) => Some(*inner),
        other => other,
    };
    let (reply, caller) = match fault {
        Some(Fault::DropConnection) => {
            log(sim, &call, DROPPED, None);
            return Err(Dropped);
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            route(sim, &call)
        }
        Some(Fault::AnswerLate(delay)) => {
            let handled = route(sim, &call);
            tokio::time::sleep(delay).await;
            handled
        }
        Some(Fault::AnswerLost) => {
            let (_, caller) = route(sim, &call);
            log(sim, &call, DROPPED, caller);
            return Err(Dropped);
        }
        Some(fault) => (fault_reply(&fault), None),
        None => route(sim, &call),
    };
    log(sim, &call, reply.status().as_u16(), caller);
    let mut reply = reply;
    // The instance's clock, as a real instance's `Date` is the clock that
    // stamps `sys_updated_on`.
    if let Ok(now) = chrono::NaiveDateTime::parse_from_str(&sim.now(), super::DATETIME_FORMAT) {
        let date = now
            .and_utc()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        if let Ok(value) = hyper::header::HeaderValue::from_str(&date) {
            reply.headers_mut().insert(hyper::header::DATE, value);
        }
    }
    Ok(reply)
}

fn log(sim: &Simulator, call: &Call, status: u16, caller: Option<Caller>) {
    lock(&sim.inner.log).push(LoggedRequest {
        at: Instant::now(),
        method: call.method.to_string(),
        path: call.path.clone(),
        query: call.params.clone(),
        status,
        caller,
    });
}

fn route(sim: &Simulator, call: &Call) -> (Reply, Option<Caller>) {
    if call.path == "/oauth_token.do" {
        return (token_endpoint(sim, call), None);
    }
    let Some(rest) = [
        "/api/now/table/",
        "/api/now/v1/table/",
        "/api/now/v2/table/",
    ]
    .iter()
    .find_map(|prefix| call.path.strip_prefix(prefix)) else {
        return (
            error(400, "Requested URI does not represent any resource", None),
            None,
        );
    };
    let caller = match lock(&sim.inner.auth).authenticate(call.authorization.as_deref()) {
        Ok(caller) => caller,
        Err(_) => {
            let mut reply = error(
                401,
                "User Not Authenticated",
                Some("Required to provide Auth information"),
            );
            reply.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("BASIC realm=\"Service-now\""),
            );
            return (reply, None);
        }
    };
    let decision = lock(&sim.inner.limiter)
        .as_mut()
        .map(|limiter| limiter.take());
    if let Some(RateDecision {
        retry_after: Some(wait),
        ..
    }) = decision
    {
        let mut reply = error(
            429,
            "Rate limit exceeded",
            Some("The number of requests exceeded the rate limit rule"),
        );
        rate_headers(&mut reply, decision.as_ref(), Some(wait));
        return (reply, Some(caller));
    }
    let (table, sys_id) = match rest.split_once('/') {
        Some((table, sys_id)) => (table, Some(sys_id)),
        None => (rest, None),
    };
    let mut reply = match (&call.method, sys_id) {
        (&Method::GET, None) => list(sim, call, table),
        (&Method::GET, Some(id)) => get_one(sim, call, table, id),
        (&Method::POST, None) => create(sim, call, table, &caller),
        (&Method::PATCH | &Method::PUT, Some(id)) => modify(sim, call, table, id, &caller),
        (&Method::DELETE, Some(id)) => remove(sim, table, id),
        _ => error(
            405,
            "Method not Supported",
            Some("The HTTP method is not supported for this resource"),
        ),
    };
    rate_headers(&mut reply, decision.as_ref(), None);
    (reply, Some(caller))
}

fn list(sim: &Simulator, call: &Call, table_name: &str) -> Reply {
    if let Some(reply) = unsupported_display_value(call) {
        return reply;
    }
    let limit = number_param(call, "sysparm_limit").unwrap_or(DEFAULT_LIMIT);
    let offset = number_param(call, "sysparm_offset").unwrap_or(0);
    let encoded = call.param("sysparm_query").unwrap_or_default();
    let mut state = sim.state();
    let Some(table) = state.tables.get_mut(table_name) else {
        return invalid_table(table_name);
    };
    let (query, problems) = query::parse(encoded, |f| table.field(f));
    let nothing = !problems.is_empty() && sim.inner.invalid_queries == InvalidQueries::NoRows;
    if !problems.is_empty() && sim.inner.invalid_queries == InvalidQueries::Reject {
        let detail = problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        return error(400, "Invalid query", Some(&detail));
    }
    let (total, page) = if nothing {
        (0, Vec::new())
    } else {
        table.select(&query, offset, limit)
    };
    let columns = selected_columns(table, call);
    let links = reference_links(sim, call);
    let mut body = Vec::with_capacity(64 + page.len() * 512);
    body.extend_from_slice(b"{\"result\":[");
    for (i, &slot) in page.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        table.render(&mut body, slot, &columns, links);
    }
    body.extend_from_slice(b"]}");
    let served = state
        .pages_served
        .entry(table_name.to_string())
        .or_default();
    let info = PageInfo {
        table: table_name.to_string(),
        index: *served,
        query: encoded.to_string(),
        offset,
        limit,
        returned: page.len(),
        total,
    };
    *served += 1;
    drop(state);

    // Run the hook after the page is fixed and before the client can see
    // it, so the test knows exactly which page its change follows.
    let mut hook = lock(&sim.inner.page_hook);
    if let Some(hook) = hook.as_mut() {
        hook(&info, sim);
    }
    drop(hook);

    let mut reply = json_reply(200, body);
    let headers = reply.headers_mut();
    headers.insert("X-Total-Count", HeaderValue::from(total));
    if limit > 0 {
        let link = link_header(sim, call, offset, limit, total);
        headers.insert(
            "Link",
            HeaderValue::from_str(&link).expect("a URL is a valid header"),
        );
    }
    reply
}

/// ServiceNow's `Link`: `<url>;rel="first",<url>;rel="prev",…` where each
/// URL repeats the request's query string with `sysparm_offset` replaced
/// (appended last) and `sysparm_limit` appended after it if the request
/// had none.
fn link_header(sim: &Simulator, call: &Call, offset: usize, limit: usize, total: usize) -> String {
    let kept: Vec<&str> = call
        .raw_query
        .split('&')
        .filter(|piece| !piece.is_empty() && piece.split('=').next() != Some("sysparm_offset"))
        .collect();
    let has_limit = kept
        .iter()
        .any(|p| p.split('=').next() == Some("sysparm_limit"));
    let url = |at: usize| {
        let mut query = kept.join("&");
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("sysparm_offset={at}"));
        if !has_limit {
            query.push_str(&format!("&sysparm_limit={limit}"));
        }
        format!("<{}{}?{query}>", sim.inner.base_url, call.path)
    };
    let last = if total == 0 {
        0
    } else {
        (total - 1) / limit * limit
    };
    let mut links = vec![format!("{};rel=\"first\"", url(0))];
    if offset > 0 {
        links.push(format!(
            "{};rel=\"prev\"",
            url(offset.saturating_sub(limit))
        ));
    }
    if offset.saturating_add(limit) < total {
        links.push(format!("{};rel=\"next\"", url(offset + limit)));
    }
    links.push(format!("{};rel=\"last\"", url(last)));
    links.join(",")
}

fn get_one(sim: &Simulator, call: &Call, table_name: &str, sys_id: &str) -> Reply {
    if let Some(reply) = unsupported_display_value(call) {
        return reply;
    }
    let state = sim.state();
    let Some(table) = state.tables.get(table_name) else {
        return invalid_table(table_name);
    };
    match table.slot(sys_id) {
        Some(slot) => record_reply(200, table, slot, call, sim),
        None => no_record(),
    }
}

fn create(sim: &Simulator, call: &Call, table_name: &str, caller: &Caller) -> Reply {
    let Some(body) = json_object(&call.body) else {
        return invalid_payload();
    };
    let mut state = sim.state();
    let now = state.clock.now();
    let Some(table) = state.tables.get_mut(table_name) else {
        return invalid_table(table_name);
    };
    let mut fields = writable(&body);
    // A client may choose a new record's sys_id, nothing else of the
    // system fields.
    if let Some(Value::String(id)) = body.get("sys_id")
        && store::is_sys_id(id)
        && table.slot(id).is_none()
    {
        fields.insert("sys_id".to_string(), Value::String(id.to_lowercase()));
    }
    let sys_id = match table.insert(&fields, false, &now, &caller.user_name()) {
        Ok(sys_id) => sys_id,
        Err(e) => return error(403, "Operation Failed", Some(&e)),
    };
    let slot = table.slot(&sys_id).expect("just inserted");
    let mut reply = record_reply(201, table, slot, call, sim);
    let location = format!("{}/api/now/table/{table_name}/{sys_id}", sim.inner.base_url);
    reply.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(&location).expect("a URL is a valid header"),
    );
    reply
}

fn modify(sim: &Simulator, call: &Call, table_name: &str, sys_id: &str, caller: &Caller) -> Reply {
    let Some(body) = json_object(&call.body) else {
        return invalid_payload();
    };
    let mut state = sim.state();
    let now = state.clock.now();
    let Some(table) = state.tables.get_mut(table_name) else {
        return invalid_table(table_name);
    };
    if table
        .update(sys_id, &writable(&body), &now, &caller.user_name())
        .is_none()
    {
        return no_record();
    }
    let slot = table.slot(sys_id).expect("just updated");
    record_reply(200, table, slot, call, sim)
}

fn remove(sim: &Simulator, table_name: &str, sys_id: &str) -> Reply {
    let mut state = sim.state();
    let Some(table) = state.tables.get_mut(table_name) else {
        return invalid_table(table_name);
    };
    if !table.delete(sys_id) {
        return no_record();
    }
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::NO_CONTENT;
    reply
}

/// A body's fields minus the system ones, which the instance sets itself.
fn writable(body: &Map<String, Value>) -> Map<String, Value> {
    body.iter()
        .filter(|(k, _)| !SYSTEM_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn record_reply(status: u16, table: &Table, slot: usize, call: &Call, sim: &Simulator) -> Reply {
    let mut body = b"{\"result\":".to_vec();
    table.render(
        &mut body,
        slot,
        &selected_columns(table, call),
        reference_links(sim, call),
    );
    body.push(b'}');
    json_reply(status, body)
}

/// `sysparm_fields`, minus names the table lacks (omitted silently, as the
/// instance does); all columns when absent or empty.
fn selected_columns(table: &Table, call: &Call) -> Vec<usize> {
    match call.param("sysparm_fields").map(str::trim) {
        Some(fields) if !fields.is_empty() => {
            let mut columns = Vec::new();
            for column in fields.split(',').filter_map(|f| table.column(f.trim())) {
                if !columns.contains(&column) {
                    columns.push(column);
                }
            }
            columns
        }
        _ => table.all_columns(),
    }
}

/// The instance URL to build reference links from, unless the request
/// asked for `sysparm_exclude_reference_link=true`.
fn reference_links<'a>(sim: &'a Simulator, call: &Call) -> Option<&'a str> {
    match call.param("sysparm_exclude_reference_link") {
        Some(v) if v.eq_ignore_ascii_case("true") => None,
        _ => Some(sim.inner.base_url.as_str()),
    }
}

fn unsupported_display_value(call: &Call) -> Option<Reply> {
    match call.param("sysparm_display_value") {
        None | Some("false") | Some("") => None,
        Some(other) => Some(error(
            400,
            "Unsupported by the simulator",
            Some(&format!(
                "sysparm_display_value={other}: the simulator serves raw values only"
            )),
        )),
    }
}

fn number_param(call: &Call, name: &str) -> Option<usize> {
    call.param(name).and_then(|v| v.trim().parse().ok())
}

fn json_object(body: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn token_endpoint(sim: &Simulator, call: &Call) -> Reply {
    if call.method != Method::POST {
        return error(405, "Method not Supported", None);
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&call.body)
        .into_owned()
        .collect();
    match lock(&sim.inner.auth).grant(&form) {
        Ok(token) => json_reply(200, token.to_string().into_bytes()),
        Err(_) => json_reply(
            401,
            json!({"error_description": "access_denied", "error": "server_error"})
                .to_string()
                .into_bytes(),
        ),
    }
}

fn fault_reply(fault: &Fault) -> Reply {
    match fault {
        Fault::TooManyRequests { retry_after } => {
            let mut reply = error(
                429,
                "Rate limit exceeded",
                Some("The number of requests exceeded the rate limit rule"),
            );
            let wait = faults::whole_seconds(*retry_after);
            let decision = RateDecision {
                limit: 1,
                reset: faults::unix_after(*retry_after),
                retry_after: Some(wait),
            };
            rate_headers(&mut reply, Some(&decision), Some(wait));
            reply
        }
        Fault::ServerError(status) => error(
            *status,
            "Server Error",
            Some("An injected fault: the instance failed to answer"),
        ),
        Fault::HtmlError(status) => {
            let mut reply = Response::new(Full::new(Bytes::from_static(
                b"<html><head><title>Instance Unavailable</title></head>\
                  <body><h1>Instance Unavailable</h1></body></html>",
            )));
            *reply.status_mut() = StatusCode::from_u16(*status).expect("a valid status");
            reply.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html;charset=UTF-8"),
            );
            reply
        }
        Fault::DropConnection
        | Fault::Delay(_)
        | Fault::AnswerLate(_)
        | Fault::AnswerLost
        | Fault::ForMethod(..) => unreachable!("handled before routing"),
    }
}

fn rate_headers(reply: &mut Reply, decision: Option<&RateDecision>, retry_after: Option<u64>) {
    let Some(decision) = decision else { return };
    let headers = reply.headers_mut();
    headers.insert("X-RateLimit-Limit", HeaderValue::from(decision.limit));
    headers.insert("X-RateLimit-Reset", HeaderValue::from(decision.reset));
    headers.insert(
        "X-RateLimit-Rule",
        HeaderValue::from_static(RATE_LIMIT_RULE),
    );
    if let Some(wait) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(wait));
    }
}

fn json_reply(status: u16, body: Vec<u8>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    reply
}

/// The instance's error body: `{"error":{"message","detail"},"status":"failure"}`.
fn error(status: u16, message: &str, detail: Option<&str>) -> Reply {
    let body = json!({"error": {"message": message, "detail": detail}, "status": "failure"});
    json_reply(status, body.to_string().into_bytes())
}

fn invalid_table(name: &str) -> Reply {
    error(400, &format!("Invalid table {name}"), None)
}

fn no_record() -> Reply {
    error(
        404,
        "No Record found",
        Some("Record doesn't exist or ACL restricts the record retrieval"),
    )
}

fn invalid_payload() -> Reply {
    error(
        400,
        "Exception while reading request",
        Some("The payload is not valid JSON."),
    )
}
