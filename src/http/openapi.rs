//! The OpenAPI 3 document of the API, served at `/openapi.json`. A test
//! checks that every route the router serves is in it and vice versa.

use serde_json::{json, Value};

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}})
}

fn page_params() -> Vec<Value> {
    vec![
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}),
        json!({"name": "after", "in": "query", "schema": {"type": "string"}, "description": "the `next` cursor of the previous page"}),
    ]
}

fn prefer() -> Value {
    json!({"name": "Prefer", "in": "header", "schema": {"type": "string", "example": "wait=5"},
           "description": "wait=N: wait up to N seconds for the saga to finish before answering"})
}

/// The OpenAPI document.
pub fn document() -> Value {
    let common_errors = |mut responses: serde_json::Map<String, Value>| {
        responses.insert(
            "401".into(),
            err("missing or wrong API key (only when http.api_keys is set)"),
        );
        responses.insert("405".into(), err("method not allowed"));
        responses.insert(
            "503".into(),
            err("not ready, overloaded (OVERLOADED: too many orders in flight or queued for the customer, see Retry-After), storage full (STORAGE_FULL, see Retry-After) or storage failed (STORAGE_FAILED: the process is stopping)"),
        );
        Value::Object(responses)
    };
    let r = |pairs: Vec<(&str, Value)>| {
        let m: serde_json::Map<String, Value> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        common_errors(m)
    };
    let mut orders_list_params = page_params();
    orders_list_params
        .push(json!({"name": "customerId", "in": "query", "schema": {"type": "string"}}));
    orders_list_params.push(json!({"name": "state", "in": "query", "schema": {"$ref": "#/components/schemas/OrderState"}}));
    let mut doc = json!({
        "openapi": "3.0.3",
        "info": {"title": "durasaga", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Customers & Orders with a CreateOrder saga that survives kill -9."},
        "paths": {
            "/health/live": {"get": {"summary": "the process is up", "responses": r(vec![("200", ok("live", "Status"))])}},
            "/health/ready": {"get": {"summary": "recovery is done", "responses": r(vec![("200", ok("ready", "Status"))])}},
            "/customers": {
                "post": {"summary": "create a customer",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateCustomer"}}}},
                    "responses": r(vec![("201", ok("created", "Customer")), ("400", err("invalid body")), ("413", err("body too large")), ("415", err("not JSON"))])},
                "get": {"summary": "list customers", "parameters": page_params(),
                    "responses": r(vec![("200", ok("a page", "CustomerPage")), ("400", err("bad query"))])}
            },
            "/customers/{customerId}": {"get": {"summary": "a customer", "parameters": [id_param("customerId")],
                "responses": r(vec![("200", ok("the customer", "Customer")), ("400", err("bad query")), ("404", err("no such customer"))])}},
            "/orders": {
                "post": {"summary": "create an order and start its CreateOrder saga", "parameters": [prefer()],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateOrder"}}}},
                    "responses": r(vec![("201", ok("created; PENDING unless the saga finished within the wait", "Order")), ("400", err("invalid body")), ("413", err("body too large")), ("415", err("not JSON"))])},
                "get": {"summary": "list orders", "parameters": orders_list_params,
                    "responses": r(vec![("200", ok("a page", "OrderPage")), ("400", err("bad query"))])}
            },
            "/orders/{orderId}": {"get": {"summary": "an order (long-poll with Prefer: wait=N; time travel with asOf)",
                "parameters": [id_param("orderId"), prefer(), {"name": "asOf", "in": "query", "schema": {"type": "string", "format": "date-time"}}],
                "responses": r(vec![("200", ok("the order", "Order")), ("400", err("bad asOf")), ("404", err("no such order (at that time)"))])}},
            "/orders/{orderId}/history": {"get": {"summary": "the order's events", "parameters": [id_param("orderId")],
                "responses": r(vec![("200", ok("events", "OrderHistory")), ("400", err("bad query")), ("404", err("no such order"))])}},
            "/orders/{orderId}/cancel": {"post": {"summary": "cancel an APPROVED order (CancelOrder saga)", "parameters": [id_param("orderId"), prefer()],
                "responses": r(vec![("200", ok("the order; CANCELLED once the saga ends", "Order")), ("400", err("bad query")), ("404", err("no such order")), ("409", err("the order is not APPROVED"))])}},
            "/sagas/{sagaId}": {"get": {"summary": "a saga with its transition history", "parameters": [id_param("sagaId")],
                "responses": r(vec![("200", ok("the saga", "Saga")), ("400", err("bad query")), ("404", err("no such saga"))])}},
            "/sagas/{sagaId}/retry": {"post": {"summary": "resume a PAUSED or FAILED saga", "parameters": [id_param("sagaId")],
                "responses": r(vec![("200", ok("the saga", "Saga")), ("400", err("bad query")), ("404", err("no such saga")), ("409", err("the saga is not PAUSED or FAILED"))])}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": r(vec![("200", json!({"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}))])}},
            "/openapi.json": {"get": {"summary": "this document", "responses": r(vec![("200", json!({"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}))])}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Money": {"type": "object", "required": ["amount"], "additionalProperties": false,
                    "properties": {"amount": {"oneOf": [{"type": "string", "pattern": "^([0-9]{1,12}(\\.[0-9]{1,2})?|1000000000000(\\.0{1,2})?)$"}, {"type": "number", "minimum": 0, "maximum": 1000000000000u64, "multipleOf": 0.01}]}}},
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string", "nullable": true}}}}},
                "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
                "CreateCustomer": {"type": "object", "required": ["name", "creditLimit"], "additionalProperties": false,
                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*\\S[^\\u0000-\\u001f\\u007f-\\u009f]*$"}, "creditLimit": {"$ref": "#/components/schemas/Money"}}},
                "Customer": {"type": "object", "required": ["customerId", "name", "creditLimit", "availableCredit"],
                    "properties": {"customerId": {"type": "string"}, "name": {"type": "string"},
                        "creditLimit": {"$ref": "#/components/schemas/Money"}, "availableCredit": {"$ref": "#/components/schemas/Money"}}},
                "CustomerPage": {"type": "object", "required": ["customers"], "properties": {
                    "customers": {"type": "array", "items": {"$ref": "#/components/schemas/Customer"}}, "next": {"type": "string"}}},
                "CreateOrder": {"type": "object", "required": ["customerId", "orderTotal"], "additionalProperties": false,
                    "properties": {"customerId": {"oneOf": [{"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}, {"type": "integer"}]},
                        "orderTotal": {"$ref": "#/components/schemas/Money"}}},
                "OrderState": {"type": "string", "enum": ["PENDING", "APPROVED", "REJECTED", "CANCELLED"]},
                "Order": {"type": "object", "required": ["orderId", "customerId", "orderTotal", "orderState", "rejectionReason", "sagaId"],
                    "properties": {"orderId": {"type": "string"}, "customerId": {"type": "string"},
                        "orderTotal": {"$ref": "#/components/schemas/Money"}, "orderState": {"$ref": "#/components/schemas/OrderState"},
                        "rejectionReason": {"type": "string", "nullable": true, "enum": ["INSUFFICIENT_CREDIT", "UNKNOWN_CUSTOMER", "CREDIT_CHECK_TIMEOUT", null]},
                        "sagaId": {"type": "string"}, "createdAt": {"type": "string", "format": "date-time"}, "updatedAt": {"type": "string", "format": "date-time"}}},
                "OrderPage": {"type": "object", "required": ["orders"], "properties": {
                    "orders": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}}, "next": {"type": "string"}}},
                "OrderHistory": {"type": "object", "required": ["orderId", "events"], "properties": {"orderId": {"type": "string"},
                    "events": {"type": "array", "items": {"type": "object", "required": ["seq", "type", "at", "data"], "properties": {
                        "seq": {"type": "integer"}, "type": {"type": "string"}, "at": {"type": "string", "format": "date-time"}, "data": {"type": "object"}}}}}},
                "Saga": {"type": "object", "required": ["sagaId", "kind", "orderId", "state", "attempt", "history"],
                    "properties": {"sagaId": {"type": "string"}, "kind": {"type": "string", "enum": ["CreateOrder", "CancelOrder"]},
                        "orderId": {"type": "string"}, "customerId": {"type": "string"}, "state": {"type": "string"}, "step": {"type": "string"},
                        "attempt": {"type": "integer"}, "deadline": {"type": "string", "format": "date-time", "nullable": true},
                        "inBackoff": {"type": "boolean"}, "rejectionReason": {"type": "string", "nullable": true}, "error": {"type": "string", "nullable": true},
                        "startedAt": {"type": "string", "format": "date-time"}, "updatedAt": {"type": "string", "format": "date-time"},
                        "history": {"type": "array", "items": {"type": "object", "properties": {"at": {"type": "string"}, "state": {"type": "string"},
                            "attempt": {"type": "integer"}, "cause": {"type": "string"}}}}}}
            }
        }
    });
    add_admin_paths(&mut doc, r);
    doc
}

fn idempotency_key() -> Value {
    json!({"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "minLength": 1, "maxLength": 200},
           "description": "the same key with the same request answers the same entity; with another request, 422"})
}

fn add_admin_paths(doc: &mut Value, r: impl Fn(Vec<(&str, Value)>) -> Value) {
    let paths = &mut doc["paths"];
    for (path, method) in [("/customers", "post"), ("/orders", "post")] {
        if let Some(params) = paths[path][method]["parameters"].as_array_mut() {
            params.push(idempotency_key());
        } else {
            paths[path][method]["parameters"] = json!([idempotency_key()]);
        }
        paths[path][method]["responses"]["422"] =
            err("Idempotency-Key reused with another request");
    }
    let mut saga_params = page_params();
    saga_params.push(json!({"name": "state", "in": "query", "schema": {"type": "string", "enum": [
        "RESERVING_CREDIT", "RELEASING_CREDIT", "APPROVING_ORDER", "REJECTING_ORDER", "CANCELLING_ORDER",
        "PAUSED", "APPROVED", "REJECTED", "CANCELLED", "FAILED"]}}));
    saga_params.push(json!({"name": "olderThan", "in": "query",
        "schema": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?s?$"}]},
        "description": "an RFC 3339 time or an age in seconds: only sagas last updated before it"}));
    paths["/sagas"] = json!({"get": {"summary": "list sagas (find stuck, paused and failed ones)", "parameters": saga_params,
        "responses": r(vec![("200", ok("a page", "SagaPage")), ("400", err("bad query"))])}});
    paths["/customers/{customerId}/orderhistory"] = json!({"get": {"summary": "the customer's order history (CQRS view)",
        "parameters": [id_param("customerId")],
        "responses": r(vec![("200", ok("the view", "OrderHistoryView")), ("400", err("bad query")), ("404", err("no such customer"))])}});
    let dl_params = vec![
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}),
        json!({"name": "after", "in": "query", "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{1,32}$"}}),
    ];
    paths["/deadletters"] = json!({"get": {"summary": "messages set aside after failing too often", "parameters": dl_params,
        "responses": r(vec![("200", ok("a page", "DeadLetterPage")), ("400", err("bad query"))])}});
    paths["/deadletters/{id}/redeliver"] = json!({"post": {"summary": "put a dead letter back into its entity's inbox",
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
        "responses": r(vec![("200", ok("redelivered", "Redelivered")), ("400", err("bad query")), ("404", err("no such dead letter")), ("409", err("nothing to redeliver"))])}});
    let schemas = &mut doc["components"]["schemas"];
    schemas["SagaPage"] = json!({"type": "object", "required": ["sagas"], "properties": {
        "sagas": {"type": "array", "items": {"$ref": "#/components/schemas/Saga"}}, "next": {"type": "string"}}});
    schemas["OrderHistoryView"] = json!({"type": "object", "required": ["customerId", "name", "creditLimit", "orders"], "properties": {
        "customerId": {"type": "string"}, "name": {"type": "string"}, "creditLimit": {"$ref": "#/components/schemas/Money"},
        "orders": {"type": "array", "items": {"type": "object", "required": ["orderId", "orderState", "orderTotal", "rejectionReason"], "properties": {
            "orderId": {"type": "string"}, "orderState": {"$ref": "#/components/schemas/OrderState"},
            "orderTotal": {"$ref": "#/components/schemas/Money"}, "rejectionReason": {"type": "string", "nullable": true}}}}}});
    let dl = json!({"type": "object", "required": ["id", "service", "entity", "error", "attempts", "at"], "properties": {
        "id": {"type": "string"}, "service": {"type": "string"}, "entity": {"type": "string"},
        "kind": {"type": "string", "nullable": true}, "sagaId": {"type": "string", "nullable": true},
        "error": {"type": "string"}, "attempts": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}}});
    schemas["DeadLetterPage"] = json!({"type": "object", "required": ["deadletters"], "properties": {
        "deadletters": {"type": "array", "items": dl.clone()}, "next": {"type": "string"}}});
    schemas["Redelivered"] =
        json!({"type": "object", "required": ["redelivered"], "properties": {"redelivered": dl}});
}
