"""The privacy stage (issue 19): how identifiable each method's output still is.

Renders of every head (:mod:`.render`), the attacker's two networks (:mod:`.faces`), ranks
and rates (:mod:`.identify`), the facial tissue left (:mod:`.residual`), one scan's work
(:mod:`.scan`), the cohort's tables (:mod:`.summary`) and the stage (:mod:`.stage`).
"""
