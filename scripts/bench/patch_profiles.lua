-- wrk script for scripts/bench/user.sh: PATCH /v1/users/me as many users
-- in turn (one token per line of the file given after `--`), each request
-- a new display name, so every one is a change and writes one event.
local counter = 0
function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
end

local tokens = {}
local sent = 0
function init(args)
    for line in io.lines(args[1]) do
        tokens[#tokens + 1] = line
    end
end

function request()
    sent = sent + 1
    local token = tokens[(sent % #tokens) + 1]
    local body = string.format('{"display_name":"Bench %d-%d"}', id, sent)
    return wrk.format("PATCH", "/v1/users/me", {
        ["authorization"] = "Bearer " .. token,
        ["content-type"] = "application/json",
        ["if-match"] = "*",
    }, body)
end
