-- One wrk script for every request of benches/databases.sh, set up by environment
-- variables (wrk's LuaJIT can read them):
--   BENCH_METHOD     GET or POST (default POST)
--   BENCH_PATH       the path, e.g. /api/collections/posts/records/@ID@
--   BENCH_BODY       the body (JSON); none when unset or empty
--   BENCH_AUTH       the Authorization header's value (optional)
--   BENCH_ID_FORMAT  how record number N becomes an id (string.format), e.g. p%d
--   BENCH_ID_COUNT   ids rotate through BENCH_ID_COUNT records (default 10000): numbers
--                    BENCH_ID_FIRST, then every BENCH_ID_STEP-th (defaults 1 and 1)
--   BENCH_TAG        makes the titles of created records unique to this run
--   BENCH_EXPECT     text every good response body contains
--   BENCH_HEADERS    more headers, one `Name: value` a line (optional)
-- Placeholders in BENCH_PATH and BENCH_BODY: @ID@ (the next id in the rotation),
-- @N@ (a number unique to the request), @TITLE@, @TEXT@ (about 240 bytes),
-- @VIEWS@ (0..100000) and @PUBLISHED@ (true/false) of a new post made from @N@.
-- A path and body without placeholders are sent as one fixed request.
-- A response that is not 2xx, lacks BENCH_EXPECT or has "errors" counts as bad;
-- done() prints "BAD <count>" and the first bad body.

local method = os.getenv("BENCH_METHOD") or "POST"
local path_template = os.getenv("BENCH_PATH") or "/"
local body_template = os.getenv("BENCH_BODY")
if body_template == "" then
    body_template = nil
end
local auth = os.getenv("BENCH_AUTH")
local id_format = os.getenv("BENCH_ID_FORMAT") or "%d"
local id_count = tonumber(os.getenv("BENCH_ID_COUNT") or "10000")
local id_first = tonumber(os.getenv("BENCH_ID_FIRST") or "1")
local id_step = tonumber(os.getenv("BENCH_ID_STEP") or "1")
local tag = os.getenv("BENCH_TAG") or tostring(os.time())
local expect = os.getenv("BENCH_EXPECT") or ""

local LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    .. "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    .. "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure "
    .. "dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur."

wrk.method = method
wrk.path = path_template
wrk.body = body_template
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
if auth and auth ~= "" then
    wrk.headers["Authorization"] = auth
end
for name, value in (os.getenv("BENCH_HEADERS") or ""):gmatch("([^:\n]+):%s*([^\n]*)") do
    wrk.headers[name] = value
end

local threads = {}
function setup(thread)
    thread:set("thread_number", #threads + 1)
    table.insert(threads, thread)
end

counter = 0
bad = 0
first_bad = nil

function init(args)
    -- Threads start at different points of the rotation.
    counter = ((thread_number or 1) - 1) * 7919
end

local function dynamic(text)
    return text ~= nil and text:find("@%u+@") ~= nil
end

if dynamic(path_template) or dynamic(body_template) then
    function request()
        counter = counter + 1
        local n = counter
        local unique = tag .. "-" .. (thread_number or 1) .. "-" .. n
        local values = {
            ID = string.format(id_format, id_first + id_step * ((n - 1) % id_count)),
            N = unique,
            TITLE = "Bench post " .. unique,
            TEXT = string.sub("Created by wrk as post " .. unique .. ": " .. LOREM, 1, 240),
            VIEWS = tostring(math.fmod(math.fmod(n * 2654435761, 4294967296), 100001)),
            PUBLISHED = (n % 3 ~= 0) and "true" or "false",
        }
        local path = path_template:gsub("@(%u+)@", values)
        local body = body_template and body_template:gsub("@(%u+)@", values) or nil
        return wrk.format(nil, path, nil, body)
    end
end

function response(status, headers, body)
    if status < 200 or status > 299 or not body:find(expect, 1, true)
        or body:find('"errors"', 1, true) then
        bad = bad + 1
        if first_bad == nil then
            first_bad = status .. " " .. body:sub(1, 400)
        end
    end
end

function done(summary, latency, requests)
    local total, sample = 0, nil
    for _, thread in ipairs(threads) do
        total = total + (thread:get("bad") or 0)
        sample = sample or thread:get("first_bad")
    end
    io.write(string.format("BAD %d\n", total))
    if sample then
        io.write("FIRST_BAD " .. sample:gsub("\n", " ") .. "\n")
    end
end
