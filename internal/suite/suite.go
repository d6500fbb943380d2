// Package suite runs the subtests of duplex's conformance suites
// (cdc/cdctest, apply/applytest): each in parallel on its own fixture,
// skipped with a reason when the implementation lacks the feature.
package suite

import "testing"

// Case is one conformance check on a fixture B.
type Case[B any] struct {
	Name string
	Run  func(t *testing.T, b B)
	Skip string // why the check does not apply, "" when it does
}

// Run runs each case as a parallel subtest of t on a fixture from setup.
func Run[B any](t *testing.T, cases []Case[B], setup func(t *testing.T) B) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			if c.Skip != "" {
				t.Skip(c.Skip)
			}
			c.Run(t, setup(t))
		})
	}
}

// Unless returns "" when supported, else why a check is skipped:
// "the <what> does not support <feature>".
func Unless(supported bool, what, feature string) string {
	if supported {
		return ""
	}
	return "the " + what + " does not support " + feature
}
