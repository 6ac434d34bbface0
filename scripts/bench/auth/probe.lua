-- wrk script mixin: pace each connection to one request every 10 ms (100/s),
-- so a latency probe measures the service under someone else's load
-- instead of adding load of its own.
delay = function()
    return 10
end
