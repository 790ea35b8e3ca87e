//! `upstream-client-bench <awc|hyper> <workers> <listen port> <upstream base URL>`: forwards
//! every request's path to the upstream and streams the answer back, nothing else.

use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

type HyperClient = Client<HttpConnector, Empty<Bytes>>;

struct Upstream(String);

async fn through_awc(client: web::Data<awc::Client>, up: web::Data<Upstream>, req: HttpRequest) -> HttpResponse {
    let url = format!("{}{}", up.0, req.uri().path());
    match client.request(req.method().clone(), url).no_decompress().send().await {
        Ok(response) => HttpResponse::build(response.status()).streaming(response),
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

async fn through_hyper(client: web::Data<HyperClient>, up: web::Data<Upstream>, req: HttpRequest) -> HttpResponse {
    let Ok(uri) = format!("{}{}", up.0, req.uri().path()).parse::<hyper::Uri>() else {
        return HttpResponse::BadRequest().finish();
    };
    match client.get(uri).await {
        Ok(response) => {
            let status = actix_web::http::StatusCode::from_u16(response.status().as_u16())
                .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            let body = response.into_body().into_data_stream().map(|chunk| chunk.map_err(actix_web::error::ErrorBadGateway));
            HttpResponse::build(status).streaming(body)
        }
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, client, workers, port, upstream] = args.as_slice() else {
        eprintln!("usage: upstream-client-bench <awc|hyper> <workers> <listen port> <upstream base URL>");
        std::process::exit(2);
    };
    let (client, upstream) = (client.clone(), upstream.trim_end_matches('/').to_string());
    let workers: usize = workers.parse().expect("workers is a number");
    let port: u16 = port.parse().expect("port is a number");
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let app = App::new().app_data(web::Data::new(Upstream(upstream.clone())));
            if client == "awc" {
                app.app_data(web::Data::new(awc::Client::default())).default_service(web::to(through_awc))
            } else {
                let hyper_client: HyperClient = Client::builder(TokioExecutor::new()).build_http();
                app.app_data(web::Data::new(hyper_client)).default_service(web::to(through_hyper))
            }
        })
        .workers(workers)
        .bind(("127.0.0.1", port))?
        .run()
        .await
    })
}
