// Side-effect imports: each feature's CLI registers itself as a `vmforge` subprogram here.
// (nbd, firmware, hugepages, run and qmp add one line each.)
import './nbd/index.js';
