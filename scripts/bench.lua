-- bench.lua: wrk script for `make bench` (scripts/bench.sh).
--
--   wrk ... -s scripts/bench.lua URL -- turns PREFIX [USERS]
--       POST /sms/inbound: many distinct users, each walking a real conversation. A user's turns
--       cycle through "HS <code>" (a dossier lookup), "1" (a menu step), "HS <code>", "MENU" (back
--       to the main menu), so half the turns are lookups and half are menu steps, and every text
--       is valid in the state the previous one left the user in.
--   wrk ... -s scripts/bench.lua URL -- otp TOKEN
--       POST /api/v1/otp as a portal (Bearer TOKEN), every request for a new phone (so no cooldown
--       or per-phone limit answers 429): thread t owns numbers 849t0000000 upwards.
--   wrk ... -s scripts/bench.lua URL -- bare
--       GET /livez (no Redis work), built per request by the same request() path, so both runs pay
--       the same Lua cost inside wrk and the ratio compares the server's work.
--
-- Every message id is unique: PREFIX-THREAD-COUNTER (the gateway de-duplicates on id). Users are
-- split between wrk threads (thread t owns its own block of phone numbers), so no two connections
-- ever send for the same user at once and no turn conflicts on a session another one is saving.

local code = "000.00.20.H21-231125-0001"
local texts = { "HS " .. code, "1", "HS " .. code, "MENU" }
local nthreads = 0

function setup(thread)
	thread:set("tid", nthreads)
	nthreads = nthreads + 1
end

local mode, prefix, users, per, first, n
local signed = {}	-- zalo mode: this thread's pre-signed {body, mac} pairs
local headers = { ["Content-Type"] = "application/json" }
local otp_headers = { ["Content-Type"] = "application/json" }

function init(args)
	mode = args[1] or "turns"
	prefix = args[2] or "r"
	users = tonumber(args[3] or "10000")
	-- tid is this thread's index (set in setup); the thread count comes from BENCH_THREADS
	-- (bench.sh exports what it passes as -t), so the threads' blocks of users are disjoint.
	local nt = tonumber(os.getenv("BENCH_THREADS") or "2")
	per = math.floor(users / nt)
	first = tid * per
	n = 0
	if mode == "otp" then
		otp_headers["Authorization"] = "Bearer " .. (args[2] or "")
	end
	if mode == "zalo" then
		-- args[2] is a file of "MAC<TAB>BODY" lines signed by bench.sh; thread t takes every
		-- nt-th line from line t, so every webhook (msg_id) is sent once
		local i = 0
		for line in io.lines(args[2]) do
			if i % nt == tid then
				local tab = line:find("\t", 1, true)
				signed[#signed + 1] = { line:sub(tab + 1), line:sub(1, tab - 1) }
			end
			i = i + 1
		end
	end
end

local zalo_headers = { ["Content-Type"] = "application/json" }

function request()
	if mode == "bare" then
		return wrk.format("GET", "/livez")
	end
	if mode == "otp" then
		local body = string.format('{"phone":"849%d%07d","purpose":"login"}', tid, n)
		n = n + 1
		return wrk.format("POST", "/api/v1/otp", otp_headers, body)
	end
	if mode == "zalo" then
		-- past the end the ids repeat: bench.sh then sees fewer saved turns than answers and fails
		local s = signed[n % #signed + 1]
		n = n + 1
		zalo_headers["X-ZEvent-Signature"] = "mac=" .. s[2]
		return wrk.format("POST", "/zalo/webhook", zalo_headers, s[1])
	end
	local u = first + n % per
	-- a user's next text each time round the users; users start at different places in the
	-- cycle, so at any moment half the turns in flight are lookups
	local step = (math.floor(n / per) + u) % #texts + 1
	local body = string.format('{"from":"09%08d","to":"8077","text":"%s","id":"%s-%d-%d"}',
	    u, texts[step], prefix, tid, n)
	n = n + 1
	return wrk.format("POST", "/sms/inbound", headers, body)
end
