//! `GET /api/openapi.json`: the OpenAPI 3.1 document, generated from the route table below, which
//! a test checks against the router so the two cannot drift.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub scope: &'static str,
    pub summary: &'static str,
    pub params: &'static [&'static str],
}

const READ: &[&str] = &["from", "to", "tz", "model", "key", "key_id", "endpoint", "provider", "credential", "status"];

pub const ROUTES: &[Route] = &[
    Route { method: "post", path: "/api/ingest/events", scope: "ingest", summary: "Append events: one JSON object, a JSON array or NDJSON; gzip accepted", params: &[] },
    Route { method: "get", path: "/api/console/stats", scope: "read", summary: "Totals, percentiles and top-N breakdowns (models, keys, endpoints, providers, credentials, status classes)", params: &["from", "to", "tz", "model", "key", "key_id", "endpoint", "provider", "credential", "status", "top"] },
    Route { method: "get", path: "/api/console/usage-trend", scope: "read", summary: "Token, call, error and latency series per local minute, hour, day, week or month", params: &["from", "to", "tz", "model", "key", "key_id", "endpoint", "provider", "credential", "status", "days", "granularity"] },
    Route { method: "get", path: "/api/console/history", scope: "read", summary: "Calls and tokens per UTC day or month for up to ten years, counting what retention deleted from the daily rollups, and per model, key, provider, credential or status", params: &["days", "from", "to", "granularity", "group", "top"] },
    Route { method: "get", path: "/api/console/logs", scope: "read", summary: "Newest events first, by cursor", params: &["from", "to", "tz", "model", "key", "key_id", "endpoint", "provider", "credential", "status", "limit", "cursor", "min_latency_ms"] },
    Route { method: "get", path: "/api/console/export", scope: "read", summary: "Streamed export of the filtered view (json, ndjson, csv)", params: &["from", "to", "tz", "model", "key", "key_id", "endpoint", "provider", "credential", "status", "format"] },
    Route { method: "get", path: "/api/console/stream", scope: "read", summary: "Server-Sent Events: new log rows and totals", params: READ },
    Route { method: "get", path: "/api/console/status", scope: "read", summary: "Storage and server status", params: &[] },
    Route { method: "get", path: "/api/console/sources", scope: "read", summary: "State of each collector (CLIProxyAPI sources)", params: &[] },
    Route { method: "get", path: "/api/console/keys", scope: "read", summary: "Managed keys, masked, with usage", params: &[] },
    Route { method: "post", path: "/api/console/keys", scope: "admin", summary: "Create a key {name, description, scope}; the secret is returned once", params: &[] },
    Route { method: "patch", path: "/api/console/keys/{id}", scope: "admin", summary: "Change a key's name, description or enabled flag", params: &[] },
    Route { method: "delete", path: "/api/console/keys/{id}", scope: "admin", summary: "Delete a key", params: &[] },
    Route { method: "get", path: "/api/openapi.json", scope: "any", summary: "This document", params: &[] },
    Route { method: "get", path: "/metrics", scope: "read", summary: "Prometheus metrics", params: &[] },
    Route { method: "get", path: "/healthz", scope: "none", summary: "Liveness and the writer's state", params: &[] },
];

pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut params: Vec<Value> = r
            .params
            .iter()
            .map(|p| json!({ "name": p, "in": "query", "required": false, "schema": { "type": "string" } }))
            .collect();
        if r.path.contains("{id}") {
            params.push(json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }));
        }
        let mut op = json!({
            "summary": r.summary,
            "parameters": params,
            "x-scope": r.scope,
            "responses": {
                "200": { "description": "`{\"code\":0,\"data\":…}`" },
                "400": { "description": "`{\"code\":400,\"msg\":\"<field>: <problem>\"}`" },
                "401": { "description": "`{\"code\":401,\"msg\":\"Unauthorized\"}`" },
                "403": { "description": "The token's scope does not allow this route" },
            },
        });
        if r.scope != "none" {
            op["security"] = json!([{ "bearer": [] }]);
        }
        if r.method == "post" || r.method == "patch" {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "type": "object" } } } });
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Tokenboard", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "paths": paths,
    })
}

pub async fn openapi() -> Response {
    Json(document()).into_response()
}
