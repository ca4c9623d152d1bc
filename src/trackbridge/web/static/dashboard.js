/*
 * trackbridge dashboard: a client of the live API (DESIGN §5), and nothing else.
 *
 * One entry point for the three views the server renders (body[data-view]): the runs list
 * (runs.js), a run (run.js: charts, gallery.js, system.js) and the compare view (compare.js).
 * What they share is in common.js, chart.js and stream.js.
 */
import { body, dropTokenFromUrl } from "./common.js";
import { compareView } from "./compare.js";
import { runView } from "./run.js";
import { runsView } from "./runs.js";

dropTokenFromUrl();
var views = { runs: runsView, run: runView, compare: compareView };
(views[body.dataset.view] || runsView)();
