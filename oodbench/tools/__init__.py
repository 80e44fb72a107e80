"""Tools around the engine: the throughput benchmark (`bench`), attack sanity checks (`sanity`), the 2-D toy of
Figure 2 (`toy`) and its plot (`plots`), the attack-precision experiment (`precision`). They import the engine;
the engine never imports them. The modules that add a subcommand register it with `oodbench.cli` when the command
line loads this package."""
