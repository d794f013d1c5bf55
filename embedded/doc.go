// Package embedded runs a whole cachewire cluster in one process: Kafka (franz-go's kfake) and
// Redis (miniredis) in memory unless real ones are named, one writer and any number of cache
// nodes. The demo command, the benchmarks, the client examples, the cachectl tests and the
// consistency checker (package checker) run on it.
//
// Besides starting and stopping the whole cluster, a Cluster crashes and restarts its parts for
// fault injection: KillNode and RestartNode (node i, back on its address), KillWriter and
// RestartWriter (on its database and address), and Kafka and Redis give the in-process servers
// to pause, flush or restart. Config.Node and Config.Writer adjust each start's configuration:
// a node's origin loader can be wrapped there, and its Kafka connections routed through a
// Cutter (internal/fault) that cuts it off.
//
// Usage:
//
//	c, err := embedded.Start(embedded.Config{Nodes: 3})
//	if err != nil { ... }
//	defer c.Close()
//	fmt.Println(c.WriterAddr, c.NodeAddrs)
//
//	c.KillNode(1) // a crash: no drain
//	err = c.RestartNode(ctx, 1)
package embedded
