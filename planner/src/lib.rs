//! vmctl planning: LiveState, diff, action graph, rendering. Filled by issue 5.
