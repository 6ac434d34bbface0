-- wrk script: sign-ins cycling over N accounts bench-<i>@example.com (one
-- account's checks run one at a time by design, so a storm needs several).
-- Arguments: N, password. Successes are never throttled.
local counter = 0

function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
end

init = function(args)
    accounts = tonumber(args[1])
    password = args[2]
    next_account = id
end

request = function()
    next_account = (next_account + 1) % accounts
    local body = '{"email":"bench-' .. next_account .. '@example.com","password":"' .. password .. '"}'
    return wrk.format("POST", "/v1/auth/login", { ["Content-Type"] = "application/json" }, body)
end
