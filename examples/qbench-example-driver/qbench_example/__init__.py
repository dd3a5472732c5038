"""An example of a team's own queue (`listqueue`) and the qbench driver that measures it."""
