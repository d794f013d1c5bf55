// Package fault injects the faults that the tests (internal/testenv) and the checker (cachecheck)
// share: an in-process Kafka that stops answering, a network between one client and Kafka that can
// be cut, and a real server paused or restarted through its control script. It does not import
// package testing, so the binaries can link it.
//
// Usage:
//
//	heal := fault.Refuse(kfakeCluster, "kafka paused") // every request fails until heal()
//	defer heal()
//
//	var cut fault.Cutter
//	cfg.Kafka.Dial = cut.Dial // node i's connections to Kafka
//	cut.Cut()                // open connections closed, new dials refused
//	cut.Heal()
//
//	pid, err := fault.Script("scripts/kafka.sh").PID()
package fault
