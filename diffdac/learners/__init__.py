"""The learners: a block of actor-critic networks stacked as one population, their A2C step
(returns, loss, clipping, RMSprop), observation and return normalisers, and the compiled loops
that stand in for torch ops where they give the same bits. Knows nothing of graphs or runs."""
