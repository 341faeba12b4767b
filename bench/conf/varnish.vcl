# Varnish as a caching edge: /obj/ cached (malloc storage), /pass/ passed, WebSocket piped.
vcl 4.1;

backend origin { .host = "127.0.0.1"; .port = "@ORIGIN_PORT@"; }
backend ws     { .host = "127.0.0.1"; .port = "@WS_PORT@"; }

sub vcl_recv {
    if (req.http.upgrade ~ "(?i)websocket") {
        set req.backend_hint = ws;
        return (pipe);
    }
    set req.backend_hint = origin;
    set req.http.host = "bench.local";
    if (req.url ~ "^/pass/") {
        return (pass);
    }
    return (hash);
}

sub vcl_pipe {
    if (req.http.upgrade) {
        set bereq.http.upgrade = req.http.upgrade;
        set bereq.http.connection = req.http.connection;
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
