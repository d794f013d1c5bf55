package security

import (
	"fmt"
	"strings"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Mechanisms are the SASL mechanisms a Kafka client can use.
var Mechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// SASL returns the kafka-go mechanism for name (case-insensitive), or nil when name is empty.
func SASL(name, username, password string) (sasl.Mechanism, error) {
	if name == "" {
		if username != "" || password != "" {
			return nil, fmt.Errorf("security: a Kafka SASL user name or password is set but no mechanism (--kafka-sasl-mechanism %s)", strings.Join(Mechanisms, ", "))
		}
		return nil, nil
	}
	if username == "" || password == "" {
		return nil, fmt.Errorf("security: SASL %s needs a user name and a password", strings.ToUpper(name))
	}
	switch strings.ToUpper(name) {
	case "PLAIN":
		return plain.Mechanism{Username: username, Password: password}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, username, password)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, username, password)
	}
	return nil, fmt.Errorf("security: SASL mechanism %q: want one of %s", name, strings.Join(Mechanisms, ", "))
}
