//! The Notification Service role: durable topics, signed webhook deliveries with retry and
//! dead-lettering, a live Server-Sent Events stream with resume, and replay.

mod callback;
mod config;
mod handlers;
mod schema;
mod state;
mod store;
mod topics;
mod worker;

use actix_web::web;
use utoipa::OpenApi;

use self::state::NotifyState;
use crate::platform::error::ErrorBody;
use crate::platform::role::{About, Mount, Role, RoleContext};
use crate::platform::standard::BearerAuth;

/// Request bodies, public for the fuzz targets (`fuzz/`).
pub use self::handlers::PublishRequest;
pub use self::worker::{signature, webhook_body};

const ABOUT: About = About {
    name: "notify",
    title: "Notification Service",
    description: "FountainAI's event hub: durable topics, HMAC-signed webhook deliveries with retry and dead-lettering, a live Server-Sent Events stream with resume, and replay of past events.",
    default_port: 8006,
};

pub struct Notify;

impl Role for Notify {
    fn about(&self) -> &'static About {
        &ABOUT
    }

    fn openapi(&self) -> utoipa::openapi::OpenApi {
        NotifyApi::openapi()
    }

    fn check_config(&self, config: &crate::config::Config) -> Result<(), String> {
        config.role_settings::<config::NotifyConfig>(self.name())?.validate()
    }

    fn start(&self, ctx: &RoleContext) -> Result<Mount, String> {
        let state = web::Data::new(state::init(ctx)?);
        ctx.spawn("notify.delivery", worker::run(state.clone().into_inner()));
        Ok(Mount::routes(move |cfg| routes(cfg, state.clone())))
    }
}

fn routes(cfg: &mut web::ServiceConfig, state: web::Data<NotifyState>) {
    cfg.app_data(state);
    cfg.service(web::resource("/events").post(handlers::publish).get(handlers::replay))
        .service(web::resource("/events/stream").get(handlers::stream))
        .service(web::resource("/subscriptions").post(handlers::subscribe).get(handlers::list_subscriptions))
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
        handlers::list_subscriptions, handlers::get_subscription, handlers::delete_subscription, handlers::list_deliveries,
        handlers::retry_delivery
    ),
    components(schemas(
        handlers::PublishRequest, handlers::Published, handlers::EventView, handlers::EventPage,
        handlers::SubscribeRequest, handlers::SubscriptionView, handlers::SubscriptionList,
        handlers::DeliveryView,
        handlers::DeliveryList, ErrorBody
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "Events", description = "Publish, replay and stream events"),
        (name = "Subscriptions", description = "Webhook subscriptions and their deliveries")
    )
)]
struct NotifyApi;
