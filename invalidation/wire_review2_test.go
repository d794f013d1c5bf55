package invalidation

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// TestReview2DecodeWireFieldNumberRange: proto.Unmarshal refuses a field number above
// protowire.MaxValidNumber (2^29-1) as invalid wire data; protowire.ConsumeTag does not check
// the upper bound, so decodeWire skips such a field as unknown and accepts the record. A rolling
// upgrade then has old nodes dead-lettering a record that new nodes apply. Found by
// FuzzDecodeWire within seconds (input 88c9b5aa3030).
func TestReview2DecodeWireFieldNumberRange(t *testing.T) {
	t.Run("fuzz", func(t *testing.T) { checkWire(t, []byte("\x88ɵ\xaa00")) }) // field 1621732497, varint
	for _, num := range []protowire.Number{19000, protowire.MaxValidNumber, protowire.MaxValidNumber + 1, 1<<31 - 1} {
		b := protowire.AppendTag(nil, 1, protowire.BytesType)
		b = protowire.AppendString(b, "k")
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, 3)
		b = protowire.AppendTag(b, num, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
		t.Run(fmt.Sprint(num), func(t *testing.T) { checkWire(t, b) })
	}
}
