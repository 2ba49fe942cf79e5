"""Held-out wordings of the LIBERO-Goal instructions (split ``unseen_paraphrase``), written for
vlaforge and never used in training. LIBERO-Goal shares one scene across its ten tasks, so a
policy can only tell them apart by the instruction: reworded, it measures whether the policy
reads the words or keys on a few of them.
"""

from __future__ import annotations

PARAPHRASES: dict[str, tuple[str, ...]] = {
    "open_the_middle_drawer_of_the_cabinet": ("pull the middle drawer of the cabinet open",
                                              "slide out the cabinet's middle drawer"),
    "put_the_bowl_on_the_stove": ("place the bowl onto the stove", "set the bowl down on the cooktop"),
    "put_the_wine_bottle_on_top_of_the_cabinet": ("place the wine bottle on the cabinet's top",
                                                  "set the bottle of wine on top of the cabinet"),
    "open_the_top_drawer_and_put_the_bowl_inside": ("pull out the top drawer and place the bowl in it",
                                                    "open the upper drawer, then put the bowl into it"),
    "put_the_bowl_on_top_of_the_cabinet": ("place the bowl on the top of the cabinet", "set the bowl up on the cabinet"),
    "push_the_plate_to_the_front_of_the_stove": ("slide the plate in front of the stove",
                                                 "move the plate over to the front of the stove"),
    "put_the_cream_cheese_in_the_bowl": ("place the cream cheese into the bowl", "drop the cream cheese box in the bowl"),
    "turn_on_the_stove": ("switch the stove on", "start up the stove"),
    "put_the_bowl_on_the_plate": ("place the bowl onto the plate", "set the bowl down on the plate"),
    "put_the_wine_bottle_on_the_rack": ("place the wine bottle in the rack", "set the bottle of wine on the wine rack"),
}

# What the ``blank`` split says instead of the task: the same words for every task, so a policy
# that ignores language is unaffected and one that follows it can only guess (about 1 in 10 on
# LIBERO-Goal).
BLANK = "do the task"
