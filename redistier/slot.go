package redistier

import (
	"strconv"
	"strings"
)

// Slot returns the Redis Cluster hash slot of key (CRC16/XMODEM of its hash tag, modulo 16384).
func Slot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}

// slotEpochKeys returns, for every hash slot, an epoch key that lives in that slot, so that one
// script can check an entry and its epoch in cluster mode. prefix holds no brace (validated).
func slotEpochKeys(prefix string) []string {
	keys := make([]string, 16384)
	for n, found := 0, 0; found < len(keys); n++ {
		k := prefix + epochSuffix + "{" + strconv.Itoa(n) + "}"
		if s := Slot(k); keys[s] == "" {
			keys[s] = k
			found++
		}
	}
	return keys
}
