-- bench_onestop.lua: wrk script for the one-stop backend part of `make bench` (bench_onestop in
-- scripts/bench.sh): POST /sms/inbound "HS <code>", every request from its own user (thread t
-- owns numbers 8491t000000 upwards) with a code drawn from CODES distinct ones, so lookups miss
-- the cache once per code and hit it afterwards. Message ids are unique.
--   wrk ... -s scripts/bench_onestop.lua URL -- CODES
local nthreads = 0

function setup(thread)
	thread:set("tid", nthreads)
	nthreads = nthreads + 1
end

local codes, n
local headers = { ["Content-Type"] = "application/json" }

function init(args)
	codes = tonumber(args[1] or "2000")
	n = 0
	math.randomseed(tid * 7919 + 17)
end

function request()
	n = n + 1
	local code = string.format("000.00.20.H21-231125-%04d", math.random(1, codes))
	local body = string.format('{"from":"0913%d%05d","to":"8077","text":"HS %s","id":"os-%d-%d"}',
	    tid, n % 100000, code, tid, n)
	return wrk.format("POST", nil, headers, body)
end
