// Fire-point alarm banner, shown on every page of a logged-in user.
"use strict";
