package invalidation

// PartitionFor returns the partition that a record keyed by key lands on in a topic of n
// partitions under the Murmur2 balancer: the Java client's default partitioner
// (toPositive(murmur2(key)) % n), which kafka-go's Murmur2Balancer also implements. Nodes use it
// to find which partition's freshness vouches for a key. It returns 0 when n < 1.
func PartitionFor(key string, n int) int {
	if n < 1 {
		return 0
	}
	return int(murmur2(key)&0x7fffffff) % n
}

// murmur2 is Kafka's variant of MurmurHash2 (seed 0x9747b28c), over the key's bytes.
func murmur2(data string) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	i := 0
	for ; length-i >= 4; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch length - i {
	case 3:
		h ^= uint32(data[i+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[i+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[i])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
