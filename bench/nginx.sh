# Sourced by the bench scripts: the nginx peers they measure against, started in the
# foreground of a background job (the caller records the pid).
# nginx_upstream DIR PORT — `return 200 'ok'`, one worker: the trivial upstream.
# nginx_proxy DIR PORT UPSTREAM_PORT WORKERS — `proxy_pass` with kept-alive upstream connections.
nginx_upstream() {
  mkdir -p "$1"
  cat > "$1/upstream.conf" <<CONF
worker_processes 1; daemon off; pid $1/upstream.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$2; location / { return 200 'ok'; } } }
CONF
  exec nginx -c "$1/upstream.conf" -p "$1"
}

nginx_proxy() {
  mkdir -p "$1"
  cat > "$1/proxy.conf" <<CONF
worker_processes $4; daemon off; pid $1/proxy.pid; error_log stderr error;
events { worker_connections 4096; }
http { access_log off;
  upstream backend { server 127.0.0.1:$3; keepalive 64; }
  server { listen 127.0.0.1:$2;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
  exec nginx -c "$1/proxy.conf" -p "$1"
}
