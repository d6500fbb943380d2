package reconcile

// SetBeforeRecheck sets a function the Checker runs just before it checks
// the ranges that differed a second time.
func SetBeforeRecheck(c *Checker, fn func()) { c.beforeRecheck = fn }
