package backup

import dto "github.com/prometheus/client_model/go"

// SentBytesForTest reads the agent's sent-bytes counter for the tests of this package.
func SentBytesForTest(m *Metrics) float64 {
	var d dto.Metric
	if err := m.sentBytes.Write(&d); err != nil {
		return 0
	}
	return d.GetCounter().GetValue()
}
