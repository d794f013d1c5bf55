// Package checker checks cachewire's invariants under faults, as Jepsen-style histories: a
// workload of concurrent sessions writes through the writer and reads through several nodes
// (half with the session's min_version), while a scenario injects one fault or several at once
// (node crash, writer crash between commit and publish, broker restart, Redis restart or flush,
// a node cut off from Kafka, L2 group rebalances, offsets out of retention, cold keys with a slow
// origin). Check then finds, in the recorded history, reads below their min_version, reads staler
// than the bound outside a fault, reads that went back in time per session or per node, acked
// writes never served, and tiers that did not converge.
//
// The cluster comes from package embedded, on in-process Kafka and Redis or on real servers
// (EnvFromTestEnv); this package keeps only the fault injection (cluster.go), the workload
// (workload.go), the final reads (finals.go) and the checks (check.go). cmd/cachecheck prints
// the report; TestFaultScenarios runs every scenario in the test suite.
//
//	env, err := checker.EnvFromTestEnv()
//	...
//	out := checker.Run(ctx, env, checker.Scenarios[0], checker.Options{Seed: 7})
//	if !out.Result.OK() { ... }
package checker
