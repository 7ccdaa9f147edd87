from ._agcam import AgcamError as AgcamError
from ._agcam import Explainer as Explainer
from ._agcam import Explanation as Explanation
from ._agcam import overlay as overlay

DEMO_WEIGHTS: str
