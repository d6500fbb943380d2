package applypg

import "time"

// SetDriftRefresh sets how soon a field unknown to the cached metadata of a
// table makes the Applier read the catalog again.
func (a *Applier) SetDriftRefresh(d time.Duration) { a.driftRefresh = d }
