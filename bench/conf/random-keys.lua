-- wrk script for bench/run scenario 8: every request is GET /obj/many/K, with K drawn at
-- random from 0 .. BENCH_KEYS-1. BENCH_KEYS=1 always asks for /obj/many/0: the one-key
-- baseline, with the same work in wrk. The requests are formatted once, in init (before
-- wrk starts its clock): per request wrk makes one Lua call and one table lookup.
local requests = {}
local count

function init(_)
    count = tonumber(os.getenv("BENCH_KEYS")) or error("BENCH_KEYS is not set")
    -- wrk.format once, then the key spliced in: a million requests in about a second.
    local head, tail = wrk.format("GET", "/obj/many/KEY"):match("^(.-)KEY(.*)$")
    for k = 0, count - 1 do
        requests[k + 1] = head .. k .. tail
    end
    math.randomseed(17)
end

function request()
    return requests[math.random(count)]
end
