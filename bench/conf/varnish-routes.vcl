# Scenario 6 for Varnish: the generated routes (@ROUTES_VCL@, written by bench/run) name the
# request's route in X-Route by its host; a route serves /obj/* from the cache and its own
# /rI/* passed, as the Portico, nginx and HAProxy configs do. Anything else is a 404.
vcl 4.1;

backend origin { .host = "127.0.0.1"; .port = "@ORIGIN_PORT@"; }

include "@ROUTES_VCL@";

sub vcl_recv {
    unset req.http.x-route;
    call match_route;
    if (!req.http.x-route) {
        return (synth(404));
    }
    set req.backend_hint = origin;
    set req.http.host = "bench.local";
    if (req.url ~ "^/obj/") {
        unset req.http.x-route;
        return (hash);
    }
    if (regsub(req.url, "^/([^/]*)/.*$", "\1") == req.http.x-route) {
        unset req.http.x-route;
        return (pass);
    }
    return (synth(404));
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
