"""Meta-World task names, hand-written instructions, benchmark task sets and difficulty groups.

Every one of the 50 tasks has three training instructions and one held-out paraphrase (used only
by the ``unseen_paraphrase`` split). Difficulty groups follow Seo et al. (Masked World Models,
2022), the grouping TinyVLA and SmolVLA report: easy 28, medium 11, hard 6, very hard 5.
"""

from __future__ import annotations

INSTRUCTIONS: dict[str, tuple[tuple[str, str, str], str]] = {
    "assembly": (("put the ring on the peg", "assemble the ring onto the peg", "place the nut over the peg"),
                 "slide the ring down onto the peg"),
    "basketball": (("put the ball in the hoop", "dunk the basketball", "pick up the ball and drop it through the hoop"),
                   "score a basket with the ball"),
    "bin-picking": (("move the cube from one bin to the other", "pick the cube out of the bin and place it in the other bin",
                     "transfer the block between the bins"), "carry the block over to the second bin"),
    "box-close": (("put the lid on the box", "close the box with its lid", "cover the box"), "place the top onto the box"),
    "button-press-topdown": (("press the button from the top", "push the button down", "press down on the button"),
                             "hit the button from above"),
    "button-press-topdown-wall": (("press the button from the top behind the wall", "push the button down past the wall",
                                   "press down on the button behind the wall"), "hit the button from above beyond the wall"),
    "button-press": (("press the button", "push the button in", "press the button forward"), "poke the button straight in"),
    "button-press-wall": (("press the button behind the wall", "push the button in past the wall",
                           "reach around the wall and press the button"), "poke the button behind the wall"),
    "coffee-button": (("press the coffee machine button", "push the button on the coffee machine", "start the coffee machine"),
                      "turn on the coffee maker"),
    "coffee-pull": (("pull the mug from the coffee machine", "take the mug out of the coffee machine",
                     "drag the cup away from the coffee machine"), "slide the mug back from the coffee maker"),
    "coffee-push": (("push the mug under the coffee machine", "slide the mug into the coffee machine",
                     "move the cup under the coffee spout"), "shove the mug beneath the coffee maker"),
    "dial-turn": (("turn the dial", "rotate the dial", "spin the knob"), "twist the dial around"),
    "disassemble": (("take the ring off the peg", "remove the nut from the peg", "lift the ring off the peg"),
                    "pull the ring up and away from the peg"),
    "door-close": (("close the door", "shut the door", "push the door closed"), "swing the door shut"),
    "door-lock": (("lock the door", "turn the door lock", "rotate the lock to lock the door"), "engage the door lock"),
    "door-open": (("open the door", "pull the door open", "swing the door open"), "get the door open"),
    "door-unlock": (("unlock the door", "turn the lock to unlock the door", "rotate the door lock open"),
                    "release the door lock"),
    "hand-insert": (("put the block in the hole", "insert the block into the hole", "push the cube into the hole"),
                    "drop the block through the opening"),
    "drawer-close": (("close the drawer", "push the drawer shut", "slide the drawer closed"), "shove the drawer in"),
    "drawer-open": (("open the drawer", "pull the drawer open", "slide the drawer out"), "pull out the drawer"),
    "faucet-open": (("open the faucet", "turn the faucet on", "rotate the faucet handle to open it"), "start the water tap"),
    "faucet-close": (("close the faucet", "turn the faucet off", "rotate the faucet handle to close it"), "stop the water tap"),
    "hammer": (("hammer the nail", "use the hammer to drive in the nail", "pick up the hammer and hit the nail"),
               "pound the nail in with the hammer"),
    "handle-press-side": (("press the handle down from the side", "push the side handle down", "press down the handle sideways"),
                          "lower the handle from the side"),
    "handle-press": (("press the handle down", "push the handle down", "press down on the handle"), "lower the handle"),
    "handle-pull-side": (("pull the handle up from the side", "lift the side handle", "pull up the handle sideways"),
                         "raise the handle from the side"),
    "handle-pull": (("pull the handle up", "lift the handle", "pull up on the handle"), "raise the handle"),
    "lever-pull": (("pull the lever up", "lift the lever", "raise the lever"), "flip the lever upward"),
    "peg-insert-side": (("insert the peg into the hole from the side", "push the peg into the side hole",
                         "put the peg in the hole sideways"), "slot the peg into the opening"),
    "pick-place-wall": (("pick up the puck and place it at the goal behind the wall", "move the puck over the wall to the goal",
                         "lift the puck past the wall onto the target"), "carry the disc across the wall to the target"),
    "pick-out-of-hole": (("pick the peg out of the hole", "pull the peg out of the hole", "lift the peg from the hole"),
                         "extract the peg from the opening"),
    "reach": (("reach the goal", "move the gripper to the goal", "go to the target position"), "put your hand at the target"),
    "push-back": (("push the puck back to the goal", "slide the puck backwards to the goal", "push the puck toward you to the target"),
                  "nudge the disc back onto the target"),
    "push": (("push the puck to the goal", "slide the puck to the goal", "push the puck onto the target"),
             "nudge the disc over to the target"),
    "pick-place": (("pick up the puck and place it at the goal", "move the puck to the goal", "put the puck on the target"),
                   "carry the disc over to the target"),
    "plate-slide": (("slide the plate into the cabinet", "push the plate into the goal slot", "slide the plate forward into the net"),
                    "shove the plate into the opening"),
    "plate-slide-side": (("slide the plate into the cabinet from the side", "push the plate sideways into the goal",
                          "slide the plate to the side into the net"), "shove the plate sideways into the opening"),
    "plate-slide-back": (("slide the plate back out of the cabinet", "pull the plate back to the goal",
                          "slide the plate backwards out of the net"), "draw the plate back out of the opening"),
    "plate-slide-back-side": (("slide the plate back out of the cabinet from the side", "pull the plate sideways back to the goal",
                               "slide the plate back to the side"), "draw the plate sideways out of the opening"),
    "peg-unplug-side": (("unplug the peg from the side", "pull the peg out sideways", "remove the plugged peg"),
                        "yank the peg out of the socket"),
    "soccer": (("kick the ball into the goal", "push the soccer ball into the net", "shoot the ball into the goal"),
               "score a goal with the ball"),
    "stick-push": (("use the stick to push the thermos", "pick up the stick and push the bottle with it",
                    "push the thermos to the goal with the stick"), "shove the flask along using the stick"),
    "stick-pull": (("use the stick to pull the thermos", "pick up the stick and pull the bottle with it",
                    "pull the thermos to the goal with the stick"), "drag the flask back using the stick"),
    "push-wall": (("push the puck to the goal around the wall", "slide the puck past the wall to the goal",
                   "push the puck around the wall onto the target"), "nudge the disc beyond the wall to the target"),
    "reach-wall": (("reach the goal behind the wall", "move the gripper over the wall to the goal",
                    "go to the target past the wall"), "put your hand at the target beyond the wall"),
    "shelf-place": (("put the block on the shelf", "place the cube on the shelf", "pick up the block and set it on the shelf"),
                    "store the block up on the shelf"),
    "sweep-into": (("sweep the puck into the hole", "push the puck into the hole", "slide the puck into the hole"),
                   "brush the disc into the opening"),
    "sweep": (("sweep the puck off the table", "push the puck off the edge", "slide the puck off the table"),
              "brush the disc off the edge"),
    "window-open": (("open the window", "slide the window open", "push the window open"), "slide the window sideways open"),
    "window-close": (("close the window", "slide the window shut", "push the window closed"), "slide the window sideways shut"),
}

DIFFICULTY: dict[str, tuple[str, ...]] = {
    "easy": (
        "button-press", "button-press-topdown", "button-press-topdown-wall", "button-press-wall", "coffee-button",
        "dial-turn", "door-close", "door-lock", "door-open", "door-unlock", "drawer-close", "drawer-open",
        "faucet-close", "faucet-open", "handle-press", "handle-press-side", "handle-pull", "handle-pull-side",
        "lever-pull", "plate-slide", "plate-slide-back", "plate-slide-back-side", "plate-slide-side", "reach",
        "reach-wall", "window-close", "window-open", "peg-unplug-side",
    ),
    "medium": (
        "basketball", "bin-picking", "box-close", "coffee-pull", "coffee-push", "hammer", "peg-insert-side",
        "push-wall", "soccer", "sweep", "sweep-into",
    ),
    "hard": ("assembly", "hand-insert", "pick-out-of-hole", "pick-place", "push", "push-back"),
    "very_hard": ("shelf-place", "disassemble", "stick-pull", "stick-push", "pick-place-wall"),
}

TASKS: tuple[str, ...] = tuple(sorted(INSTRUCTIONS))


def env_name(task: str) -> str:
    """Our task name -> the metaworld environment id (``pick-place`` -> ``pick-place-v3``)."""
    return f"{task}-v3"

