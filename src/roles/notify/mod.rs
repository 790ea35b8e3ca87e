//! The Notification Service role: durable topics, signed webhook deliveries with retry and
//! dead-lettering, a live Server-Sent Events stream with resume, and replay.

mod handlers;
mod schema;
mod state;
mod store;
mod worker;

use actix_web::web;
use utoipa::OpenApi;

use self::state::NotifyState;
use super::RoleSpec;
use crate::platform::error::ErrorBody;
use crate::platform::server::RoleContext;
use crate::platform::standard::BearerAuth;

pub use self::worker::{signature, webhook_body};

pub const ROLE: RoleSpec = RoleSpec {
    name: "notify",
    title: "Notification Service",
    default_port: 8006,
    description: "FountainAI's event hub: durable topics, HMAC-signed webhook deliveries with retry and dead-lettering, a live Server-Sent Events stream with resume, and replay of past events.",
    routes,
    openapi,
    init: state::init,
};

fn routes(cfg: &mut web::ServiceConfig, ctx: &RoleContext) {
    if let Some(state) = ctx.state::<NotifyState>() {
        cfg.app_data(state.keys.clone());
        cfg.app_data(web::Data::from(state));
    }
    cfg.service(web::resource("/events").post(handlers::publish).get(handlers::replay))
        .service(web::resource("/events/stream").get(handlers::stream))
        .service(web::resource("/subscriptions").post(handlers::subscribe))
        .service(
            web::resource("/subscriptions/{id}")
                .get(handlers::get_subscription)
                .delete(handlers::delete_subscription),
        )
        .service(web::resource("/deliveries").get(handlers::list_deliveries))
        .service(web::resource("/deliveries/{id}/retry").post(handlers::retry_delivery));
}

#[derive(OpenApi)]
#[openapi(
    paths(
        handlers::publish, handlers::replay, handlers::stream, handlers::subscribe,
        handlers::get_subscription, handlers::delete_subscription, handlers::list_deliveries,
        handlers::retry_delivery
    ),
    components(schemas(
        handlers::PublishRequest, handlers::Published, handlers::EventView, handlers::EventPage,
        handlers::SubscribeRequest, handlers::SubscriptionView, handlers::DeliveryView,
        handlers::DeliveryList, ErrorBody
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "Events", description = "Publish, replay and stream events"),
        (name = "Subscriptions", description = "Webhook subscriptions and their deliveries")
    )
)]
struct NotifyApi;

fn openapi() -> utoipa::openapi::OpenApi {
    NotifyApi::openapi()
}
