"""Run by ``fetch_medigan_package`` in a subprocess: medigan downloads a package (never imported).

Arguments: the medigan model id and the target folder; prints ``{"model_id", "path"}`` as JSON.
"""
import json, sys
from pathlib import Path
from medigan.config_manager import ConfigManager
from medigan.utils import Utils
manager = ConfigManager()
model_id = manager.match_model_id(sys.argv[1])
execution = manager.get_config_by_id(model_id, "execution")
target = Path(sys.argv[2]) / (execution["package_name"] + ".zip")
Utils.download_file(download_link=execution["package_link"], path_as_string=str(target))
print(json.dumps({"model_id": model_id, "path": str(target)}))
