-- wrk script: refresh-token rotation chains. Each connection carries one
-- chain: it presents its refresh token and the answer's successor is the
-- next one it presents. Tokens come from the file named by the first
-- script argument, one per line; thread i takes lines i, i+T, i+2T, …
-- Run with as many tokens as connections.
local threads = {}
local counter = 0

function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
    table.insert(threads, thread)
end

function init(args)
    local file = assert(io.open(args[1], "r"))
    local total = tonumber(args[2])
    queue = {}
    local index = 0
    for line in file:lines() do
        if index % total == id then
            table.insert(queue, line)
        end
        index = index + 1
    end
    file:close()
    failures = 0
end

request = function()
    -- wrk asks each thread for a request before the run starts (and may
    -- send it): answer that one without spending a token.
    if not primed then
        primed = true
        return wrk.format("GET", "/.well-known/jwks.json")
    end
    local token = table.remove(queue, 1)
    if token == nil then
        -- A chain broke (a failed refresh): keep the load honest and visible.
        token = "broken-chain"
    end
    return wrk.format("POST", "/v1/auth/refresh", { ["Content-Type"] = "application/json" },
        '{"refresh_token":"' .. token .. '"}')
end

response = function(status, headers, body)
    local token = body:match('"refresh_token":"([^"]+)"')
    if token then
        table.insert(queue, token)
    end
end
