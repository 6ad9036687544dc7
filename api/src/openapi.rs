//! The OpenAPI 3.1 document, generated from the handlers' annotations and the
//! API's types, served at `/v1/openapi.json` (CI runs schemathesis against
//! a live daemon with it: no 5xx, every answer matching its schema).

use std::sync::OnceLock;

use utoipa::OpenApi;

use super::handlers;
use super::types;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kozmo daemon API",
        description = "Submit task executions, follow them, abort them. Every error answer is an ErrorBody."
    ),
    paths(
        handlers::submit,
        handlers::submit_batch,
        handlers::list,
        handlers::get_one,
        handlers::events,
        super::watch::watch_one,
        super::watch::watch_all,
        handlers::outputs,
        handlers::abort,
        super::inspect::wait,
        super::inspect::files,
        super::inspect::file,
        super::inspect::quotas,
        handlers::plugins,
        handlers::nodes,
        super::prune::prune,
        handlers::health,
        handlers::metrics,
        handlers::openapi
    ),
    components(schemas(
        types::Execution,
        types::ExecutionErrorBody,
        types::HandlerErrorBody,
        types::ExecutionPage,
        types::Event,
        types::EventList,
        types::Outputs,
        types::AbortRequest,
        types::PruneRequest,
        types::PruneReport,
        types::PrunedRows,
        types::PluginBody,
        types::WaitBody,
        types::ResourceWait,
        types::QuotaBody,
        types::QuotaList,
        types::FileEntry,
        types::FileList,
        types::NodeBody,
        types::NodePlugin,
        types::HealthBody,
        types::ErrorBody,
        types::ItemErrorBody,
        types::BatchItemResult,
        types::BatchResponse,
        types::TaskBody,
        types::PhaseName,
        super::watch::WatchReady,
        super::watch::WatchChange
    ))
)]
struct ApiDoc;

/// The document as JSON text (built once).
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serialises")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_every_route_and_is_openapi_3_1() {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        for path in [
            "/v1/executions",
            "/v1/executions:batch",
            "/v1/executions/{id}",
            "/v1/executions/{id}/events",
            "/v1/executions/{id}/watch",
            "/v1/executions/watch",
            "/v1/executions/{id}/outputs",
            "/v1/executions/{id}/abort",
            "/v1/prune",
            "/v1/executions/{id}/wait",
            "/v1/executions/{id}/files",
            "/v1/executions/{id}/file",
            "/v1/quotas",
            "/v1/plugins",
            "/v1/nodes",
            "/healthz",
            "/metrics",
            "/v1/openapi.json",
        ] {
            assert!(doc["paths"].get(path).is_some(), "{path} missing");
        }
        let phase = &doc["components"]["schemas"]["Execution"]["properties"]["phase"];
        assert_eq!(phase["$ref"], "#/components/schemas/PhaseName", "{phase}");
        let names = doc["components"]["schemas"]["PhaseName"]["enum"].as_array().unwrap();
        assert_eq!(names.len(), types::PHASES.len());
        assert_eq!(doc["components"]["schemas"]["TaskBody"]["additionalProperties"], false);
        let stream = &doc["paths"]["/v1/executions/{id}/watch"]["get"]["responses"]["200"]["content"];
        assert!(stream.get("text/event-stream").is_some(), "{stream}");
    }
}
