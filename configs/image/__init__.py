"""The image branch's training configs, installed as the package ``drifting_image.configs`` (pyproject's
package-dir), so that ``drifting_image`` finds them with importlib.resources wherever it is installed."""
